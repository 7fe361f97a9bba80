"""Base for strict wire models, and the bounded integers every schema uses.

Unknown fields are refused (nova additionalProperties: false).  Integers are bounded where they are
parsed: a number the database cannot store (PostgreSQL's integer is 32 bits, bigint 64) must be a
400 at the edge, not an overflow 500 deep in a transaction.  Nova's own schemas stop at int32.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

INT32_MAX = 0x7FFFFFFF
INT64_MAX = 0x7FFFFFFFFFFFFFFF

# Any 32-bit integer; one that is 0 or more; one that is 1 or more.
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
# The same for bodies whose services refuse strings and floats for numbers (Glance).
StrictNonNegativeInt32 = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, str_max_length=65535)


def bounded_int(value: object, *, low: int, high: int = INT32_MAX) -> int:
    """``value`` as an integer within [low, high], for hand-parsed bodies; ValueError otherwise.

    Accepts what Nova's ``["integer", "string"]`` types accept: an integer, or a string of digits
    with an optional minus sign; never a bool or a float (``1e30`` is a float in JSON).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
            raise ValueError(f"{value!r} is not an integer")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is not between {low} and {high}")
    return value
