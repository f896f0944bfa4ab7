"""The OpenAI-compatible gateway (`guard serve`), laid out the vLLM way.

* HTTP: ``app`` (factory and lifespan; ``POST /v1/chat/completions`` goes to its pure ASGI endpoint in
  ``routes/chat``, past FastAPI's stack), ``routes/`` (thin routers), ``middleware`` (request id,
  body limit, request metrics), ``errors`` (the one error mapper), ``protocol`` (OpenAI models);
* who and what: ``auth`` (keys -> tenants), ``config`` (tenants, keys, upstreams), ``context``
  (policy and upstream per request, within the tenant), ``limits``;
* the data path: ``serving`` (the object behind the routers), ``chat`` (chat completions),
  ``pipeline`` (plan -> checks -> decision -> audit -> metrics), ``streaming`` (windows),
  ``moderation`` (+ ``moderation_map.yaml``);
* the upstream: ``upstream`` (httpx for whole answers), ``sse_client`` (token streams);
* ``services`` (what lives as long as the process), ``server`` (uvicorn, foreground or thread).
"""
