"""FLORA's retry hint for a failed run: can trying the same inputs again succeed?

Pure: a table and two functions. The hints and the upper-case codes are FLORA's own grouping
(flora-api.md §5.5, measured against production); the lower-case envelope codes a rejected start
carries (§2) are placed by what they mean. Codes match in any case. A code the table does not
know is ``unknown`` and is not retried by default: a failure nobody has classified must not make
the user pay again blindly (``retry_failed(codes=[...])`` retries it on request).
"""

from __future__ import annotations

import re

__all__ = ["CHANGE_INPUT", "HINTS", "NOT_RETRYABLE", "RETRYABLE", "RETRY_LATER", "RETRY_NOW", "UNKNOWN",
           "hint_for", "normal_code", "safety_refusal"]

RETRY_NOW = "retry now"
RETRY_LATER = "retry later"  # retryable, but FLORA (or its provider) is busy: at once it may fail again
CHANGE_INPUT = "change input"  # the same inputs fail again (and a retry bills again): never retried by default
NOT_RETRYABLE = "not retryable"
UNKNOWN = "unknown"
HINTS = (RETRY_NOW, RETRY_LATER, CHANGE_INPUT, NOT_RETRYABLE, UNKNOWN)  # the order failures are listed in
RETRYABLE = (RETRY_NOW, RETRY_LATER)  # what retry_failed() starts again by default

_TABLE = {
    RETRY_NOW: (
        "GENERATION_PROVIDER_TIMEOUT", "GPU_PROVIDER_ERROR", "GENERATION_GENERIC_ERROR", "SERVER_ERROR",
        "GENERATION_FAILED_TO_START", "GENERATION_FAILED_TO_UPLOAD", "GENERATION_FAILED_TO_UPDATE",
        "GENERATION_FAILED_TO_GET", "GENERATION_PREGENERATION_FAILED", "GENERATION_POSTGENERATION_FAILED",
        "GENERATION_MAP_AFTER_REQUEST_FAILED",
        # The reference's example run failure ("The provider failed to complete the generation."): the
        # failure FIELD sees as GPU_PROVIDER_ERROR / GENERATION_GENERIC_ERROR, refunded, hinted retry now.
        "PROVIDER_ERROR",
        "UNKNOWN_ERROR", "INTERNAL_ERROR",  # a start answered 500 (§2), as SERVER_ERROR
    ),
    RETRY_LATER: (
        "GENERATION_DOWNSTREAM_SERVICE_ERROR", "GENERATION_QUEUE_TOO_LARGE", "GENERATION_INVALID_PROVIDER_RESPONSE",
        "GENERATION_QUEUE_NOT_MOVING", "GENERATION_NO_RESULT", "GENERATION_CIRCUIT_BREAKER_OPEN",
        "GENERATION_MODAL_POLL_ERROR", "AUDIO_GENERATION_ERROR", "GENERATION_PROVIDER_FAILED_TO_GET_STATUS",
        "RATE_LIMITED",  # a start answered 429 (§2)
    ),
    CHANGE_INPUT: (
        "GENERATION_PROMPT_MODERATED", "LLM_REFUSAL", "GENERATION_INPUT_VALIDATION", "GENERATION_INVALID_PARAMS",
        "GENERATION_INVALID_URL", "GENERATION_ENDPOINT_NOT_FOUND", "GENERATION_MAP_BEFORE_REQUEST_FAILED",
        "GENERATION_PROVIDER_NOT_SUPPORTED",
        "INPUT_VALIDATION_ERROR", "INVALID_JSON",  # a start rejected with 400 (§2)
    ),
    NOT_RETRYABLE: (
        "BILLING_NOT_ENOUGH_CREDITS", "BILLING_CREDITS_LIMIT_EXCEEDED", "BILLING_WOULD_EXCEED_LIMIT",
        "BILLING_FAILED_TO_RESERVE_CREDITS", "GENERATION_NOT_PAID", "GENERATION_CANCELLED",
        # a start rejected for the key, the plan, the credits or a missing technique (§2)
        "UNAUTHORIZED", "INVALID_API_KEY", "FORBIDDEN", "PAID_PLAN_REQUIRED", "NOT_FOUND", "INSUFFICIENT_CREDITS",
    ),
}
_BY_CODE = {code: hint for hint, codes in _TABLE.items() for code in codes}
_NOT_RETRYABLE_PREFIX = "ACCESS_"
_NOT_RETRYABLE_SUFFIX = "_ENTITLEMENT_REQUIRED"
# FIELD: GPU_PROVIDER_ERROR and GENERATION_NO_RESULT often carry a safety refusal in the message
# ("...rejected by the safety system... safety_violations=[sexual]"): the same input is refused again.
_SAFETY = re.compile(r"safety[\s_-]*system|safety_violations", re.IGNORECASE)


def normal_code(code: object) -> str | None:
    """The code as the table spells it (upper case, trimmed); None when there is none."""
    if not isinstance(code, str) or not code.strip():
        return None
    return code.strip().upper()


def safety_refusal(message: object) -> bool:
    """Does a failure message say the safety system refused the input?"""
    return isinstance(message, str) and _SAFETY.search(message) is not None


def hint_for(code: object, message: object = None) -> str:
    """FLORA's retry hint for a failure with this ``error_code`` and ``error_message``.

    A safety refusal in the message means "change input" whatever the code says (only a code
    that is not retryable at all stays so); a missing or unknown code is ``unknown``.
    """
    normal = normal_code(code)
    if normal is None:
        hint = UNKNOWN
    elif normal.startswith(_NOT_RETRYABLE_PREFIX) or normal.endswith(_NOT_RETRYABLE_SUFFIX):
        hint = NOT_RETRYABLE
    else:
        hint = _BY_CODE.get(normal, UNKNOWN)
    if hint != NOT_RETRYABLE and safety_refusal(message):
        return CHANGE_INPUT
    return hint
