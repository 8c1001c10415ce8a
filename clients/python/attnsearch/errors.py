"""Errors of the attnsearch client: one class per gRPC status code.

Every call raises a subclass of AttnsearchError when the server (or the
channel) answers with an error; `code` is the grpc.StatusCode and `message`
the server's text, which names the field or the limit at fault.
"""

import grpc


class AttnsearchError(Exception):
    """A call failed; `code` (grpc.StatusCode) and `message` say why."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self):
        return f"{self.code.name}: {self.message}"


class InvalidArgument(AttnsearchError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AttnsearchError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AttnsearchError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(AttnsearchError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(AttnsearchError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(AttnsearchError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(AttnsearchError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(AttnsearchError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(AttnsearchError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(AttnsearchError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(AttnsearchError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(AttnsearchError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(AttnsearchError):
    code = grpc.StatusCode.DATA_LOSS


class DeadlineExceeded(AttnsearchError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(AttnsearchError):
    code = grpc.StatusCode.CANCELLED


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, NotFound, AlreadyExists, PermissionDenied, Unauthenticated,
    ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal,
    Unavailable, DataLoss, DeadlineExceeded, Cancelled)}


def from_rpc_error(error):
    """The AttnsearchError subclass for a grpc.RpcError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, AttnsearchError)
    return cls(details or code.name, code)
