"""Fetching the AutoPQ series from their original sources (``--download``), in the layout of the local copies.

- ``Mobility``: UCI "Bike Sharing Dataset" (id 275), ``hour.csv``: the timestamp is ``dteday`` plus ``hr``
  hours; the hours the original lacks become gaps, which :func:`~beyondbp.autopq.series.read_csv_series`
  interpolates with a notice.
- ``Load-GCP``: UCI "ElectricityLoadDiagrams20112014" (id 321), ``LD2011_2014.txt`` (semicolons, decimal
  commas, one column per client, kW per quarter hour stamped at its end): client ``MT_158``, the mean of each
  hour's four quarter hours, stamped at the hour's start.
- ``Load-BW``: Open Power System Data, hourly time series, the TransnetBW control area's load from power
  statistics (the column whose name starts ``DE_transnetbw_load`` and ends ``power_statistics``), 2018, UTC.
- ``PV``, ``Price``, ``WP``: GEFCom2014 (Hong et al. 2016) is published as one archive behind a Dropbox page,
  not at a stable address a program can fetch; the error names it and the columns our files need.

Each converter reads the downloaded archive and writes ``NAME.csv`` with a ``time`` column and the target and
feature columns of :data:`~beyondbp.autopq.series.SOURCES`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ..data.files import download
from ..errors import DataNotFoundError

UCI = "https://archive.ics.uci.edu/static/public"
BIKE_SHARING = f"{UCI}/275/bike+sharing+dataset.zip"
ELECTRICITY = f"{UCI}/321/electricityloaddiagrams20112014.zip"
OPSD = "https://data.open-power-system-data.org/time_series/2019-06-05/time_series_60min_singleindex.csv"
GEFCOM = "https://www.dropbox.com/s/pqenrr2mcvl0hk9/GEFCom2014.zip"


def _member(archive: Path, name: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        matches = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == name]
        if not matches:
            raise DataNotFoundError(f"{archive} holds no {name}; delete it to download it again")
        return z.read(matches[0])


def bike_sharing_csv(archive: Path, out: Path) -> None:
    """``Mobility.csv`` from the UCI archive."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(_member(archive, "hour.csv")))
    frame.insert(0, "time", pd.to_datetime(frame["dteday"]) + pd.to_timedelta(frame["hr"], unit="h"))
    frame.drop(columns=["dteday"]).to_csv(out, index=False)


def electricity_csv(archive: Path, out: Path, client: str = "MT_158") -> None:
    """``Load-GCP.csv`` from the UCI archive: one client's hourly mean load."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(_member(archive, "LD2011_2014.txt")), sep=";", decimal=",", index_col=0,
                        usecols=lambda c: c in ("Unnamed: 0", client) or c == "", parse_dates=True)
    frame.index = frame.index - pd.Timedelta(minutes=15)  # a quarter hour's stamp marks its end
    hourly = frame[client].resample("h").mean()
    hourly.rename_axis("time").reset_index().to_csv(out, index=False)


def opsd_csv(table: Path, out: Path, year: int = 2018) -> None:
    """``Load-BW.csv`` from OPSD's hourly table: TransnetBW's load from power statistics in ``year``."""
    import pandas as pd

    header = pd.read_csv(table, nrows=0).columns
    matches = [c for c in header if c.startswith("DE_transnetbw_load") and c.endswith("power_statistics")]
    if not matches:
        raise DataNotFoundError(f"{table} has no TransnetBW power-statistics load column; its load columns: "
                                f"{', '.join(c for c in header if 'transnetbw_load' in c) or 'none'}")
    frame = pd.read_csv(table, usecols=["utc_timestamp", matches[0]])
    stamps = pd.to_datetime(frame["utc_timestamp"]).dt.tz_localize(None)
    frame = pd.DataFrame({"time": stamps, "load_power_statistics": frame[matches[0]]})
    frame[frame["time"].dt.year == year].to_csv(out, index=False)


def fetch_series(name: str, file: str, folder: Path) -> None:
    """Download the original of series ``name`` into ``folder`` and write ``folder / file``."""
    if name == "Mobility":
        download([BIKE_SHARING], folder)
        bike_sharing_csv(folder / BIKE_SHARING.rsplit("/", 1)[-1], folder / file)
    elif name == "Load-GCP":
        download([ELECTRICITY], folder)
        electricity_csv(folder / ELECTRICITY.rsplit("/", 1)[-1], folder / file)
    elif name == "Load-BW":
        download([OPSD], folder)
        opsd_csv(folder / OPSD.rsplit("/", 1)[-1], folder / file)
    else:
        raise DataNotFoundError(
            f"data set '{name}' comes from GEFCom2014, which has no address a program can download from: get "
            f"GEFCom2014.zip by hand ({GEFCOM}), or use the local copies (--data-dir ../shared/data/autopq), "
            f"or give your file with --csv")
