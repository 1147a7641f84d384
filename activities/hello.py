"""The hello activity: runs on the worker, so it may look at the world (here, the hostname)."""

from __future__ import annotations

import socket

from temporalio import activity

from stead.contracts.hello import Greeting, GreetingRequest


@activity.defn(name="hello.greet")
async def greet(request: GreetingRequest) -> Greeting:
    return Greeting(message=f"Hello, {request.name}!", worker=socket.gethostname())
