"""The UCI Census-Income (KDD) file -> the CSV that ``feature_specs/census_income.yaml`` reads.

The raw file (``census-income.test.gz`` of ../shared/data, the official UCI test split) has no
header, 42 comma-separated fields with a leading space each, ``?`` for unknown and labels ending in
a period. :func:`convert` streams it to a CSV with a header, a ``row_id`` (the 0-based line
number, the key of the seeded hash split) and the MMoE paper's group-1 labels as 0/1 columns:
``income`` (``income_50k == "50000+."``) and ``never_married`` (``marital_stat == "Never
married"``). The raw label column is dropped; the spec leaves ``education``, ``marital_stat`` and
``instance_weight`` out of the features, as the paper does.
"""

from __future__ import annotations

import csv
import gzip
from typing import Iterator

COLUMNS = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour", "hs_college",
    "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends",
    "tax_filer_stat", "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ",
    "instance_weight", "mig_chg_msa", "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt",
    "num_emp", "fam_under_18", "country_father", "country_mother", "country_self", "citizenship",
    "own_or_self", "vet_question", "vet_benefits", "weeks_worked", "year", "income_50k",
)
OUTPUT_COLUMNS = ("row_id",) + COLUMNS[:-1] + ("income", "never_married")


def rows(path: str, limit: int | None = None) -> Iterator[dict]:
    """Yields each raw row as ``{column: stripped string}`` plus ``row_id`` and the 0/1 labels.

    Raises:
        ValueError: naming the line of a row without 42 fields.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle)):
            if limit is not None and number >= limit:
                return
            if len(fields) != len(COLUMNS):
                raise ValueError(f"{path}, line {number + 1}: {len(fields)} fields, expected {len(COLUMNS)}")
            row = dict(zip(COLUMNS, (f.strip() for f in fields)))
            row["row_id"] = str(number)
            row["income"] = int(row.pop("income_50k") == "50000+.")
            row["never_married"] = int(row["marital_stat"] == "Never married")
            yield row


def convert(source: str, destination: str, limit: int | None = None) -> int:
    """Writes the CSV the census spec reads; returns the number of rows written."""
    count = 0
    with open(destination, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=OUTPUT_COLUMNS)
        writer.writeheader()
        for row in rows(source, limit):
            writer.writerow(row)
            count += 1
    return count
