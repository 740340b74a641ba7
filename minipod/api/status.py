"""metav1.Status: the one shape every API error takes (kubectl prints its `message`)."""

from __future__ import annotations

from minipod.errors import MinipodError

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 406: "NotAcceptable", 409: "AlreadyExists", 410: "Expired",
           413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
           500: "InternalError", 501: "NotImplemented"}


class ApiError(MinipodError):
    """An error answered as a Status with this HTTP code."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        return failure(self.code, str(self), self.reason, self.details)


def failure(code: int, message: str, reason: str | None = None,
            details: dict | None = None) -> dict:
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code}
    if details:
        s["details"] = details
    return s


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, f'{kind} "{name}" not found', details={"name": name, "kind": kind})
