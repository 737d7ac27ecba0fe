"""The Spark steps' own settings stay inside the query they are for."""

from __future__ import annotations

import pytest

from fraud_assets.defs.resources import SparkResource
from fraud_assets.lib.batch import session_settings

pytestmark = pytest.mark.integration

WHOLE_STAGE = "spark.sql.codegen.wholeStage"


def test_scoring_settings_do_not_outlive_the_scoring_query(
    spark_resource: SparkResource,
) -> None:
    """A nightly run shares one session between its assets: what scoring switches off must
    be back as the user had it for whatever runs next, also when the query fails."""
    session = spark_resource.spark_session

    def top_operator() -> str:
        plan = session.range(10).selectExpr("id * 2 AS x")._jdf.queryExecution().executedPlan()
        return str(plan.getClass().getSimpleName())

    session.conf.set(WHOLE_STAGE, "true")
    with session_settings(session, {WHOLE_STAGE: "false"}):
        assert top_operator() == "ProjectExec"
    assert session.conf.get(WHOLE_STAGE) == "true"
    assert top_operator() == "WholeStageCodegenExec"

    session.conf.unset(WHOLE_STAGE)
    with pytest.raises(RuntimeError), session_settings(session, {WHOLE_STAGE: "false"}):
        raise RuntimeError("the scoring query failed")
    assert session.conf.get(WHOLE_STAGE, None) is None
