"""A workflow a careless author might write: it reads the clock, draws a random number or
reads a file. Alone in its module, importing only what a workflow module would, so the
sandbox re-imports it cheaply (tests/test_worker_sandbox.py)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from temporalio import workflow


@workflow.defn(sandboxed=True)
class Careless:
    @workflow.run
    async def run(self, what: str) -> str:
        if what == "clock":
            return str(time.time())
        if what == "random":
            return str(random.random())
        return Path(__file__).read_text()[:10]
