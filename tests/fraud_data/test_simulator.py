import datetime as dt
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraud_data.landing import landing_days
from fraud_data.simulator import (
    SCENARIOS,
    SimulationConfig,
    check_schema,
    generate,
    generate_day,
    make_world,
)

pytestmark = pytest.mark.unit

CONFIG = SimulationConfig(days=3, cards=3000, merchants=300, seed=5)


def test_same_seed_same_data_other_seed_other_data() -> None:
    world = make_world(CONFIG)
    first = generate_day(CONFIG, world, 1)
    again = generate_day(CONFIG, make_world(CONFIG), 1)
    other_config = SimulationConfig(days=3, cards=3000, merchants=300, seed=6)
    other = generate_day(other_config, make_world(other_config), 1)
    assert first.equals(again)
    assert not first.equals(other)


def test_a_day_does_not_depend_on_how_many_days_are_generated() -> None:
    short = SimulationConfig(days=2, cards=3000, merchants=300, seed=5)
    assert generate_day(short, make_world(short), 1).equals(
        generate_day(CONFIG, make_world(CONFIG), 1)
    )


def test_days_are_sorted_typed_and_stay_in_their_day() -> None:
    table = generate_day(CONFIG, make_world(CONFIG), 0)
    check_schema(table)
    ts = table.column("timestamp")
    assert ts.to_pylist() == sorted(ts.to_pylist())
    days = pc.unique(pc.strftime(ts, format="%Y-%m-%d")).to_pylist()
    assert days == [CONFIG.start.isoformat()]
    assert table.column("transaction_id").to_pylist() == sorted(
        table.column("transaction_id").to_pylist()
    )
    assert pc.count_distinct(table.column("transaction_id")).as_py() == table.num_rows


def test_fraud_is_rare_and_every_scenario_occurs() -> None:
    config = SimulationConfig(days=7, cards=20_000, merchants=2000, seed=3)
    world = make_world(config)
    tables = [generate_day(config, world, d) for d in range(config.days)]
    fraud = sum(pc.sum(t.column("is_fraud")).as_py() for t in tables)
    rows = sum(t.num_rows for t in tables)
    assert 0.001 <= fraud / rows <= 0.01
    seen = set()
    for table in tables:
        seen |= set(pc.unique(table.column("scenario").cast("string")).to_pylist())
        legit = pc.equal(table.column("scenario").cast("string"), "legit")
        # A row is fraud exactly when its scenario is a fraud scenario.
        assert pc.all(pc.equal(pc.invert(legit), table.column("is_fraud"))).as_py()
    assert seen == set(SCENARIOS)


def test_generate_writes_hive_day_folders_and_a_rerun_replaces_them(tmp_path: Path) -> None:
    counts = generate(CONFIG, tmp_path)
    assert landing_days(tmp_path) == [CONFIG.start + dt.timedelta(days=d) for d in range(3)]
    again = generate(CONFIG, tmp_path)
    assert again == counts
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"day={d.isoformat()}/part-00000.parquet" for d in counts]
    assert sum(pq.read_metadata(tmp_path / f).num_rows for f in files) == sum(counts.values())
