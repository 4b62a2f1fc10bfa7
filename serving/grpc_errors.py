"""How the gRPC services answer: each RPC's error as a gRPC status code, each RPC in the metrics.

The REST server's error vocabulary, in gRPC's codes (as TF Serving answers them):

* :class:`~serving.errors.RequestError`: its HTTP status mapped by :func:`grpc_code` (400
  ``INVALID_ARGUMENT``, 404 ``NOT_FOUND``, 413 ``RESOURCE_EXHAUSTED``, ...); its headers travel as
  trailing metadata, names in lower case.
* :class:`~serving.models.VersionNotServed`: ``NOT_FOUND``, or ``UNAVAILABLE`` when nothing is
  loaded yet; :class:`~serving.models.UnknownVersionLabel` ``INVALID_ARGUMENT``, as TF Serving.
* :class:`~serving.batching.Unavailable` (refused without running): ``RESOURCE_EXHAUSTED`` for
  :class:`~serving.batching.Overloaded`, else ``UNAVAILABLE`` (draining, a version unloaded while
  the request waited), with ``retry-after`` trailing metadata, counted as a rejection.
* ``tf.errors.InvalidArgumentError`` (an input the checks before the call let through):
  ``INVALID_ARGUMENT`` with TensorFlow's reason.
* :class:`Refused`: the code it carries (``FAILED_PRECONDITION`` for an unknown signature).
* Anything else is a bug: ``INTERNAL``, logged with its traceback.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

import grpc
import tensorflow as tf
from google.protobuf.message import Message

from serving.batching import Overloaded, Unavailable
from serving.errors import RequestError
from serving.handler import model_error_reason
from serving.models import UnknownVersionLabel, VersionNotServed

if TYPE_CHECKING:
    from serving.metrics import ServerMetrics

log = logging.getLogger(__name__)

# a RequestError's HTTP status -> the gRPC code (google.rpc's mapping); others: 4xx INVALID_ARGUMENT, 5xx UNAVAILABLE
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class Refused(Exception):
    """A client mistake answered with a gRPC code that no HTTP status of RequestError stands for.

    Args:
        code: grpc.StatusCode. The status to answer.
        message: str. What is wrong and what to send instead.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for a :class:`~serving.errors.RequestError`'s HTTP ``status``."""
    if status in GRPC_CODES:
        return GRPC_CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.UNAVAILABLE


def answer(context: grpc.ServicerContext, call: Callable[[], Message], metrics: ServerMetrics | None = None,
           endpoint: str = "", model: str = "") -> Message:
    """``call()``'s response, or the RPC aborted with the status code its error stands for.

    Args:
        context: the RPC's context (``abort`` ends the RPC; it raises).
        call: computes the response; raises for what the module docstring lists.
        metrics: the server's metrics, or None: each answer is counted with ``endpoint``, ``model``,
            the version that answered (the response's ``model_spec.version``; ``""`` for an
            error or a response without one) and the gRPC status name as ``code``.
        endpoint: str. The RPC's method name (``Predict``, ...), the metrics' ``endpoint`` label.
        model: str. The model the request named if it is the served one, else ``""``.
    """
    started = time.perf_counter()
    metadata: tuple[tuple[str, str], ...] = ()
    try:
        response = call()
    except Refused as error:
        code, message = error.code, str(error)
    except RequestError as error:
        code, message = grpc_code(error.status), str(error)
        metadata = tuple((name.lower(), value) for name, value in error.headers.items())
    except UnknownVersionLabel as error:  # TF Serving's "Unrecognized servable version label"
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
    except VersionNotServed as error:
        code = grpc.StatusCode.UNAVAILABLE if error.retryable else grpc.StatusCode.NOT_FOUND
        message = str(error)
    except Unavailable as error:  # refused without running: overload, draining, a version unloaded
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(error, Overloaded) else grpc.StatusCode.UNAVAILABLE
        message, metadata = str(error), (("retry-after", str(error.retry_after)),)
        if metrics is not None:
            metrics.observe_rejection(endpoint, error.reason)
    except tf.errors.InvalidArgumentError as error:
        code, message = grpc.StatusCode.INVALID_ARGUMENT, f"the model rejected the input: {model_error_reason(error.message)}"
    except Exception as error:  # noqa: BLE001 - a bug answers INTERNAL with its traceback logged
        log.exception("internal error in gRPC %s", endpoint or "call")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
    else:
        if metrics is not None:
            spec = getattr(response, "model_spec", None)
            version = str(spec.version.value) if spec is not None and spec.HasField("version") else ""
            metrics.observe_request(endpoint, model, version, grpc.StatusCode.OK.name, time.perf_counter() - started)
        return response
    if metrics is not None:
        metrics.observe_request(endpoint, model, "", code.name, time.perf_counter() - started)
    if metadata:
        context.set_trailing_metadata(metadata)
    context.abort(code, message)  # raises: grpc ends the RPC with this status
