"""Transforms: the pandas functions run on each partition, and loading one by `module:function`.

A transform takes the partition as a DataFrame and returns the rows to write. It must keep
the partition column unchanged. The frame it receives is Arrow-backed
(`arrow_table.to_pandas(types_mapper=pd.ArrowDtype)`), but the cleaners here also accept
pandas' default and nullable dtypes: each column is first viewed as Arrow, because pyarrow
compute is vectorized, fast, and keeps NULL as NULL in every type (no int -> float NaN).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import cast

import pandas as pd
import pyarrow as pa

from etl_worker.errors import ConfigError

Transform = Callable[[pd.DataFrame], pd.DataFrame]

#: Two-letter codes of the states, DC and the inhabited territories.
US_STATE_CODES = frozenset(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR VI GU AS MP".split()
)
#: Revenue above this (100 billion dollars) is a data-entry error for this data set.
MAX_REVENUE = Decimal(10**11)

# Whitespace that is not already a single space. (Matching every single space too, as
# \s+ does, makes the replace three times slower.)
_UNTIDY_WHITESPACE = r"[\s\v]{2,}|[\t\n\v\f\r]"
# str.title() capitalizes after a digit ("2Nd St"); these put the ordinals back ("2nd St").
_TITLED_ORDINAL = r"\d(?:St|Nd|Rd|Th)\b"
_ORDINAL_FIXES = tuple((rf"(\d){end.title()}\b", rf"\1{end}") for end in ("st", "nd", "rd", "th"))
_NON_DIGITS = r"\D+"
_NANP_PARTS = r"^1?(\d{3})(\d{3})(\d{4})$"
# Keeps only the host of a URL: drops scheme, "www.", then port, path, query or fragment.
_URL_HOST = r"^(?:[a-z][a-z0-9+.-]*://)?(?:www\.)?([^/?#:]*)(?s:.*)$"
_HOSTNAME = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}"


def identity(df: pd.DataFrame) -> pd.DataFrame:
    """Return the partition unchanged (for measuring the pipeline without transform cost)."""
    return df


def clean_companies(df: pd.DataFrame) -> pd.DataFrame:
    """The default transform: tidy names, normalize contacts, NULL out impossible numbers.

    Returns a new frame with the same rows and columns in the same order; the input is not
    modified. Columns it does not clean (id, zip_code, notes, ...) are passed through as is,
    and a column it would clean but that is missing is simply skipped.
    """
    cleaned = {
        column: clean(df[column]) for column, clean in _COMPANY_CLEANERS.items() if column in df
    }
    return df.assign(**cleaned)


# -- column cleaners: Series -> Series of the same length and index ---------------------------


def tidy_title(values: pd.Series) -> pd.Series:
    """'  ACME   widgets inc ' -> 'Acme Widgets Inc': trim, collapse whitespace, title-case."""
    text = _text(values).str.strip().str.replace(_UNTIDY_WHITESPACE, " ", regex=True)
    return _fix_ordinals(text.str.title())


def normalize_state(values: pd.Series) -> pd.Series:
    """' ny ' -> 'NY'; anything that is not a US state or territory code -> NULL."""
    code = _text(values).str.strip().str.upper()
    return code.where(code.isin(US_STATE_CODES))


def normalize_phone(values: pd.Series) -> pd.Series:
    """'+1 212.555.0142' -> '(212) 555-0142'; not 10 digits (or 11 starting with 1) -> NULL."""
    digits = _text(values).str.replace(_NON_DIGITS, "", regex=True)
    length = digits.str.len()
    valid = (length == 10) | ((length == 11) & digits.str.startswith("1"))
    formatted = digits.str.replace(_NANP_PARTS, r"(\1) \2-\3", regex=True)
    return _null_where(formatted, ~valid)


def normalize_website(values: pd.Series) -> pd.Series:
    """'HTTP://WWW.Acme.com/about' -> 'https://acme.com'; not a host name -> NULL."""
    url = _text(values).str.strip().str.lower()
    host = url.str.replace(_URL_HOST, r"\1", regex=True)
    return _null_where("https://" + host, ~host.str.fullmatch(_HOSTNAME))


def null_negative(values: pd.Series) -> pd.Series:
    """Negative numbers -> NULL (a count cannot be negative)."""
    numbers = _arrow(values)
    return numbers if _all_null(numbers) else _null_where(numbers, numbers < 0)


def null_outside(low: float | Decimal, high: float | Decimal) -> Callable[[pd.Series], pd.Series]:
    """A cleaner that turns values outside [low, high] (and NaN) into NULL."""

    def clean(values: pd.Series) -> pd.Series:
        numbers = _arrow(values)
        if _all_null(numbers):
            return numbers
        # Written as two comparisons, not between(), so NaN counts as outside too.
        return _null_where(numbers, ~((numbers >= low) & (numbers <= high)))

    return clean


def null_future(values: pd.Series) -> pd.Series:
    """Dates (or timestamps) after today, in UTC, -> NULL."""
    moments = _arrow(values)
    if _all_null(moments):
        return moments
    today = dt.datetime.now(dt.UTC).date()
    kind = _arrow_type(moments)
    limit = today if pa.types.is_date(kind) else pd.Timestamp(today, tz=getattr(kind, "tz", None))
    return _null_where(moments, moments > limit)


_COMPANY_CLEANERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "company_name": tidy_title,
    "street": tidy_title,
    "city": tidy_title,
    "state": normalize_state,
    "phone": normalize_phone,
    "website": normalize_website,
    "employees": null_negative,
    "revenue": null_outside(Decimal(0), MAX_REVENUE),
    "founded_date": null_future,
    "latitude": null_outside(-90.0, 90.0),
    "longitude": null_outside(-180.0, 180.0),
}


# -- helpers ---------------------------------------------------------------------------------


def _arrow(values: pd.Series) -> pd.Series:
    """The same values as an Arrow-backed Series (NaN and None in numpy columns become NULL)."""
    if isinstance(values.dtype, pd.ArrowDtype):
        return values
    array = pa.array(values, from_pandas=True)
    return pd.Series(array, dtype=pd.ArrowDtype(array.type), index=values.index, name=values.name)


def _text(values: pd.Series) -> pd.Series:
    text = _arrow(values)
    kind = _arrow_type(text)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return text
    # An all-NULL object column arrives as Arrow's null type, which has no string methods.
    return text.astype(pd.ArrowDtype(pa.string()))


def _fix_ordinals(titled: pd.Series) -> pd.Series:
    ordinal = titled.str.contains(_TITLED_ORDINAL, regex=True).fillna(False)
    if not ordinal.any():
        return titled
    # Only the few rows with an ordinal pay for the four replacements.
    fixed = titled[ordinal]
    for pattern, replacement in _ORDINAL_FIXES:
        fixed = fixed.str.replace(pattern, replacement, regex=True)
    return titled.mask(ordinal, fixed)


def _all_null(values: pd.Series) -> bool:
    return bool(pa.types.is_null(_arrow_type(values)))


def _arrow_type(values: pd.Series) -> pa.DataType:
    return cast(pd.ArrowDtype, values.dtype).pyarrow_dtype


def _null_where(values: pd.Series, condition: pd.Series) -> pd.Series:
    """NULL where `condition` is true; a NULL condition (from a NULL value) keeps the value."""
    return values.mask(condition.fillna(False))


# -- loading a transform by name --------------------------------------------------------------


@functools.cache
def load_transform(spec: str) -> Transform:
    """The callable named by `module:function` (`function` may be dotted: `mod:Class.method`).

    The current directory is searched first, then sys.path. Cached: every partition of a run
    asks for the same transform. Raises `ConfigError` naming what is missing.
    """
    target = load_named(spec, "transform", "(example: etl_worker.transforms:clean_companies)")
    if not callable(target):
        raise ConfigError(
            f"transform {spec!r} is not callable: {spec.replace(':', '.')} is a "
            f"{type(target).__name__} — check --transform"
        )
    return cast(Transform, target)


def load_named(spec: str, what: str, example: str = "") -> object:
    """The object named by `module:attribute` (a dotted attribute too), for the option
    --`what` (transform, contract): errors name the option and what is missing."""
    module_name, colon, attribute = spec.partition(":")
    if not (colon and module_name and attribute):
        raise ConfigError(
            f"{what} {spec!r} is not 'module:{'function' if what == 'transform' else 'Name'}' "
            f"{example + ' ' if example else ''}— check --{what}"
        )
    module = _import(spec, module_name, what)
    target: object = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigError(
                f"{what} {spec!r} not found: module {module_name!r} has no attribute "
                f"{attribute!r} — check --{what}"
            ) from None
    return target


@contextmanager
def _working_directory_on_path() -> Iterator[None]:
    """Put the current directory first on sys.path for one import, as Celery does when it
    imports by name (`celery.utils.imports.cwd_in_path`): a console script like etl-enqueue
    then finds the same user modules that `celery worker`, started from there, will run."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # the directory was deleted under us
        cwd = ""
    if not cwd or cwd in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(cwd)


def _import(spec: str, module_name: str, what: str = "transform") -> object:
    try:
        with _working_directory_on_path():
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"{what} {spec!r} not found: no module named {missing!r} — check "
                f"--{what} and that the module is installed on every worker"
            ) from None
        raise ConfigError(
            f"{what} {spec!r} could not be imported: module {module_name!r} needs "
            f"{missing!r}, which is not installed"
        ) from exc
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(
            f"{what} {spec!r} could not be imported: {type(exc).__name__}: {exc}"
        ) from exc
