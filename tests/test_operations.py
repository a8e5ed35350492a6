"""docs/operations.md and its Grafana dashboard name only metrics a running server
exports, and name all of them."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from collab.metrics import METRICS
from tests.conftest import RunningServer
from tests.test_metrics import exported_names

MakeServer = Callable[..., Awaitable[RunningServer]]
DOCS = Path(__file__).parent.parent / "docs"
NAME = re.compile(r"\bcollab_[a-z_]+[a-z]\b")


def dashboard_names() -> set[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in NAME.findall(expr)}


async def exported(make_server: MakeServer, redis_url: str) -> set[str]:
    """The names a cluster node exports (a cluster's are a single server's and more)."""
    node = await make_server(redis=redis_url)
    return await exported_names(node.http + "/metrics")


async def test_every_metric_the_dashboard_names_is_exported(
    make_server: MakeServer, redis_url: str
) -> None:
    names = await exported(make_server, redis_url)
    missing = sorted(dashboard_names() - names)
    assert not missing, f"the dashboard names metrics no server exports: {missing}"


async def test_every_metric_the_docs_name_is_exported_and_every_one_is_documented(
    make_server: MakeServer, redis_url: str
) -> None:
    text = (DOCS / "operations.md").read_text()
    names = await exported(make_server, redis_url)
    named = set(NAME.findall(text))
    missing = sorted(named - names)
    assert not missing, f"docs/operations.md names metrics no server exports: {missing}"
    for spec in METRICS:
        assert f"| `{spec.exported}` |" in text, f"{spec.exported} is not in docs/operations.md"
