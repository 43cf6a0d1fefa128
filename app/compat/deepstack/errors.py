"""DeepStack's error, raised by the service and rendered by the envelope (envelope.py)."""

from app.errors import AppError


class DeepStackError(AppError):
    """An error in DeepStack's own words; rendered as {success: false, error, duration}."""

    status = 400
    code = "deepstack_error"
