"""The guard error hierarchy, documented in one place.

* GuardError                 -- base class; never raised itself
  + BadInput                 -- the caller sent something invalid (HTTP 400, CLI exit 2)
    - PolicyNotFound         -- a policy id that does not exist or is not the caller's (HTTP 404)
    - Conflict               -- contradicts what is stored: a second verdict on one escalation
                                (HTTP 409, CLI exit 2)
    - ContextOverflow        -- a conversation longer than the model reads, where the policy says
                                ``context.overflow: refuse`` (HTTP 400, CLI exit 2)
  + ConfigError              -- bad settings or policy file (process refuses to start, CLI exit 2)
  + ModelUnavailable         -- weights not reachable, worker down, broker down (HTTP 503)
  + GuardTimeout             -- a check did not finish in time (HTTP 504)
  + MalformedModelOutput     -- the model answered outside its format (never a silent "safe")
  + UpstreamError            -- the wrapped LLM failed (HTTP 502)
    - UpstreamTimeout        -- the wrapped LLM did not answer in time (HTTP 504)
  + AuditUnavailable         -- the audit store cannot take a record (HTTP 503)

A guard that said "unsafe" is not an error: that is a Decision. Errors are what the policy's
``on_error`` handles (fail closed or open), and what the single mappers in ``guard.gateway.errors``
and ``guard.cli`` turn into HTTP statuses and exit codes.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base class of every error the guard raises on purpose."""

    #: Short machine-readable kind, stable across versions (goes into audit records and metrics).
    kind = "guard_error"
    #: HTTP status the gateway answers with.
    http_status = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadInput(GuardError):
    kind = "bad_input"
    http_status = 400


class PolicyNotFound(BadInput):
    kind = "policy_not_found"
    http_status = 404


class Conflict(BadInput):
    """The request contradicts what the audit store already holds (a verdict on an escalation
    that has one): refused by the store itself, so two gateways cannot both succeed."""

    kind = "conflict"
    http_status = 409


class ContextOverflow(BadInput):
    """The conversation does not fit the Llama Guard model's context and was not to be split. The
    caller's input is the cause, so this is not a guard failure: it is answered, never decided by
    ``on_error`` (the kind is OpenAI's code for the same condition)."""

    kind = "context_length_exceeded"
    http_status = 400


class ConfigError(GuardError):
    kind = "config_error"
    http_status = 500


class ModelUnavailable(GuardError):
    kind = "model_unavailable"
    http_status = 503


class GuardTimeout(GuardError):
    kind = "timeout"
    http_status = 504


class MalformedModelOutput(GuardError):
    kind = "malformed_output"
    http_status = 502

    def __init__(self, message: str, *, output: str | None = None) -> None:
        super().__init__(message)
        self.output = output


class UpstreamError(GuardError):
    kind = "upstream_error"
    http_status = 502


class UpstreamTimeout(UpstreamError):
    kind = "upstream_timeout"
    http_status = 504


class AuditUnavailable(GuardError):
    kind = "audit_unavailable"
    http_status = 503
