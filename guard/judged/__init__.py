"""The text the guards judge, made from the caller's text (pure functions, no model, no I/O).

A guard model reads text the way a tokenizer and a small classifier do, not the way the chat model
or a person does: a zero-width space inside a word, a Cyrillic ``о`` in a Latin word, a
base64 blob or a fake ``<|eot_id|>`` change what the guard sees far more than what the chat model
understands. The judged copy undoes that, so that the guard judges what the chat model will read.
The caller's text itself is never changed: it goes upstream and into the audit log as sent.

* ``unicode``: NFKC, invisible characters dropped (tag characters read as the ASCII they hide),
  Cyrillic and Greek look-alikes of Latin letters folded in Latin words;
* ``markers``: text imitating the Llama Guard prompt template or special tokens, neutralised, and
  the pieces it separates;
* ``encoded``: base64, hex and URL-encoded blobs that decode to text.

``guard.policy.judged`` applies them to a conversation as the policy says.
"""
