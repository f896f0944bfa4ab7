"""A local OpenAI-compatible chat server around a transformers causal LM (`guard upstream`).

It lets the whole path (gateway -> checks -> LLM) run on one machine; it is not a production LLM
server (one generation at a time, CPU-sized models).
"""
