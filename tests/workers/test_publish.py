"""The client's hand-made task message equals Celery's own (``as_task_v2``) in every field a worker
reads; the fields that differ per call (ids, tag, expiry time) are checked for form instead."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from celery import Celery

from guard.executor.publish import RedisTaskPublisher


def test_the_message_is_celerys_protocol_2_message() -> None:
    app = Celery("publish-test", set_as_current=False)
    app.conf.update(enable_utc=True)
    args = [{"requests": [{"text": "hi \u00e9"}], "timeout_s": 2.5}]
    expected = app.amqp.as_task_v2("id-1", "guard.prompt_guard", args=args, expires=30.0, reply_to="guard.replies.x",
                                   argsrepr="<guard.prompt_guard call>", kwargsrepr="{}")
    publisher = RedisTaskPublisher("redis://127.0.0.1:1/0")
    entry = json.loads(publisher.message("guard.prompt_guard", json.dumps(args), "prompt_guard", "id-1", 30.0,
                                         delivery_tag="tag-1", reply_to="guard.replies.x"))

    headers, want = dict(entry["headers"]), dict(expected.headers)
    for varying in ("expires", "origin"):
        headers.pop(varying), want.pop(varying)
    assert headers == want
    expires = datetime.fromisoformat(entry["headers"]["expires"])
    assert expires.tzinfo is not None and 25 < (expires - datetime.now(timezone.utc)).total_seconds() <= 30
    assert json.loads(base64.b64decode(entry["body"])) == json.loads(json.dumps(expected.body))
    assert entry["properties"] == {**expected.properties, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                                   "delivery_info": {"exchange": "", "routing_key": "prompt_guard"},
                                   "delivery_tag": "tag-1"}
    assert (entry["content-type"], entry["content-encoding"]) == ("application/json", "utf-8")
