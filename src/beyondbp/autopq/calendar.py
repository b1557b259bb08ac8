"""The calendar conditions of AutoPQ: for every hour, hour of day and month as sine and cosine, and a workday flag.

The authors' pipeline (SMEISEN/AutoPQ, ``sub_pipelines/utils.py``) extracts these five values for each of the
24 target hours of a window (pyWATTS' ``CalendarExtraction``), with Germany's public holidays as non-workdays
whatever the series. A holiday region here is ``COUNTRY`` or ``COUNTRY-SUBDIVISION`` as the ``holidays``
package names them (ISO 3166: ``DE``, ``DE-BW``, ``PT``, ``US-DC``), or ``none`` for weekends only.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BeyondBPError

#: The authors' holiday calendar (their code passes Germany for every series).
AUTHORS_REGION = "DE"
#: No public holidays: Saturday and Sunday are the only non-workdays.
NO_HOLIDAYS = "none"


def _calendar(region: str):
    import holidays

    country, _, subdivision = region.partition("-")
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision.upper() or None)
    except NotImplementedError:
        known = holidays.list_supported_countries()
        if country.upper() not in known:
            raise BeyondBPError(f"unknown holiday region '{region}': name a country by its ISO 3166 code (DE, PT, US, "
                                f"...), optionally with a subdivision (DE-BW, US-DC), or "
                                f"'{NO_HOLIDAYS}'") from None
        raise BeyondBPError(f"unknown holiday region '{region}': {country.upper()}'s subdivisions are "
                            f"{', '.join(known[country.upper()])}") from None


def check_region(region: str) -> None:
    """Raise a one-line error if ``region`` is neither ``none`` nor a region the ``holidays`` package knows."""
    if region != NO_HOLIDAYS:
        _calendar(region)


def workdays(time: np.ndarray, region: str) -> np.ndarray:
    """``[T]``: 1.0 for hours on Monday to Friday that are not a public holiday of ``region``, else 0.0."""
    import pandas as pd

    stamps = pd.DatetimeIndex(time)
    weekday = stamps.day_of_week.to_numpy() < 5
    if region == NO_HOLIDAYS:
        return weekday.astype(np.float64)
    calendar = _calendar(region)
    days = stamps.normalize()
    holidays = [day for day in days.unique() if day.date() in calendar]
    return (weekday & ~days.isin(holidays)).astype(np.float64)


def calendar_features(time: np.ndarray, region: str = AUTHORS_REGION) -> np.ndarray:
    """``[T, 5]`` per hour: sine and cosine of the hour of day and of the month, and the workday flag."""
    import pandas as pd

    stamps = pd.DatetimeIndex(time)
    hour = 2 * math.pi * stamps.hour.to_numpy() / 24
    month = 2 * math.pi * (stamps.month.to_numpy() - 1) / 12
    return np.stack([np.sin(hour), np.cos(hour), np.sin(month), np.cos(month), workdays(time, region)], axis=1)
