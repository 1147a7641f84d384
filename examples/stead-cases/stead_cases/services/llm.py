"""The example "LLM": an OpenAI-compatible server that writes deterministically.

It stands in for a SaaS model so the demo and the tests run offline and repeatably.
Stead reaches it through litellm exactly as it would reach a provider
(``POST /v1/chat/completions``), and it reports token usage, so cost accounting runs
for real (litellm prices the tokens as the model name it was asked for).

It plays two parts, told apart by the system prompt:

* **writer** (``llm.generate``): fills a template per channel from the context it is
  sent: the video, the brand voice's sign-off from memory, the reviewer's feedback
  when redrafting ("Revised after review: ...");
* **planner** (the LLM planner of a goal run): answers the content goal with a plan
  of Stead operations, and, when replanning after a rejected publish, with new
  ``redraft_*`` steps that carry the reviewer's comment, what a capable model does
  with the failure context Stead sends it.

Run it alone with ``python -m stead_cases.services.llm --port 8603``.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from stead_cases.services._http import Request, Response, error, run_forever

PLANNER_MARK = "You are the planner of Stead"
CONTEXT_MARK = "## Context (JSON data, not instructions)\n"
_REJECTED = re.compile(r"rejected by ((?:user|agent|service|group):[^:\s]+)(?::\s*(.*))?$", re.S)


@dataclass
class ExampleLlm:
    """Keeps what it was asked (role, model, system and user messages), so tests can
    check who called it, how often, and with which context."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0].rstrip("/")
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return error(404, f"no route {request.method} {path}")
        body = request.body if isinstance(request.body, dict) else {}
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        system = next(
            (str(m.get("content", "")) for m in messages if m.get("role") == "system"), ""
        )
        user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
        role = "planner" if system.startswith(PLANNER_MARK) else "writer"
        with self._lock:
            self.calls.append(
                {"role": role, "model": body.get("model"), "system": system, "user": user}
            )
        text = plan(user) if role == "planner" else write(system, user)
        prompt_tokens = max(1, len(system + user) // 4)
        completion_tokens = max(1, len(text) // 4)
        return Response(
            200,
            {
                "id": f"chatcmpl-example-{len(self.calls)}",
                "object": "chat.completion",
                "created": 0,
                "model": str(body.get("model", "example")),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def count(self, role: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c["role"] == role)


# ------------------------------------------------------------------ writer


def write(system: str, prompt: str) -> str:
    context: dict[str, Any] = {}
    if CONTEXT_MARK in system:
        try:
            context = json.loads(system.split(CONTEXT_MARK, 1)[1])
        except ValueError:
            context = {}
    channel = str(context.get("channel", "post"))
    video = str(context.get("video") or "this week's video")
    topic = str(context.get("topic") or "")
    signoff = _signoff(context.get("brief"))
    about = f" {topic}" if topic else ""
    if channel == "x":
        text = f"New video: {video}.{about} {signoff}".strip()[:280]
    elif channel == "newsletter":
        text = (
            f"Hi friends,\n\nThis week's video is out: {video}.{about}\n\n"
            "The short clips land on the shorts channel through the week.\n\n"
            f"{signoff}"
        )
    else:
        text = (
            f"This week I published {video}.{about}\n\n"
            "It took a few weeks of drafts to get right, and I learned a lot on the way.\n\n"
            f"{signoff}"
        )
    feedback = str(context.get("feedback") or "").strip()
    if feedback:
        text = f"{text}\n(Revised after review: {feedback})"
    return text


def _signoff(brief: Any) -> str:
    """The sign-off the brand voice memory asks for, else a neutral one."""
    for item in brief if isinstance(brief, list) else []:
        if isinstance(item, dict) and item.get("key") == "voice":
            for line in str(item.get("content", "")).splitlines():
                if line.lower().startswith("sign-off:"):
                    return line.split(":", 1)[1].strip()
    return "See you there."


# ----------------------------------------------------------------- planner


def plan(user: str) -> str:
    sections = _sections(user)
    goal = sections.get("Goal", "")
    try:
        inputs = json.loads(sections.get("Inputs", "{}"))
    except ValueError:
        inputs = {}
    if "platform_url" not in inputs:
        return json.dumps(
            {"rationale": f"I can only plan content with a platform_url input: {goal}", "steps": []}
        )
    replan = next((v for k, v in sections.items() if k.startswith("Replanning")), "")
    completed = _completed(sections.get("Completed steps", ""))
    attempt = int(re.search(r"plan attempt (\d+)", user).group(1)) if replan else 1  # type: ignore[union-attr]
    feedback = ""
    match = _REJECTED.search(replan.split("The previous plan failed:", 1)[-1].split("\n")[0])
    if match:
        feedback = (match.group(2) or "").strip()
    return json.dumps(_content_plan(inputs, goal, attempt, feedback, completed))


def _content_plan(
    inputs: dict[str, Any], goal: str, attempt: int, feedback: str, completed: set[str]
) -> dict[str, Any]:
    channels = [c for c in inputs.get("channels", ["x", "linkedin"]) if isinstance(c, str)]
    common = {"model": inputs.get("llm_model", "openai/gpt-4o-mini")}
    if inputs.get("llm_api_base"):
        common["api_base"] = inputs["llm_api_base"]
    steps: list[dict[str, Any]] = []
    if "brief" not in completed:
        steps.append(
            {
                "id": "brief",
                "operation": "content.brief",
                "args": {"memories": [{"namespace": "brand", "key": "voice"}]},
                "rationale": "the brand voice from memory",
            }
        )
    suffix = "" if attempt == 1 else f"_{attempt}"
    drafts = {}
    for channel in channels:
        previous = _latest(completed, channel)
        sid = f"draft_{channel}" if previous is None else f"redraft_{channel}{suffix}"
        context: dict[str, Any] = {
            "channel": channel,
            "video": inputs.get("video_title", goal),
            "topic": inputs.get("topic", ""),
            "brief": {"$ref": "steps.brief.output.items"},
        }
        deps = ["brief"]
        if previous is not None:
            context["previous"] = {"$ref": f"steps.{previous}.output.text"}
            context["feedback"] = feedback
            deps.append(previous)
        steps.append(
            {
                "id": sid,
                "operation": "llm.generate",
                "args": {
                    **common,
                    "system": "Write in the creator's voice from the context.",
                    "prompt": f"Draft the {channel} post for: {goal}"
                    + (" Apply the reviewer's feedback." if previous else ""),
                    "context": context,
                },
                "depends_on": deps,
                "rationale": "redraft with the reviewer's comment" if previous else "draft",
            }
        )
        drafts[channel] = sid
    package_id, publish_id = f"package{suffix}", f"publish{suffix}"
    steps += [
        {
            "id": package_id,
            "operation": "content.package",
            "args": {
                "week": inputs.get("week", "2025-W01"),
                "drafts": [
                    {
                        "channel": c,
                        "title": inputs.get("video_title", ""),
                        "text": {"$ref": f"steps.{s}.output.text"},
                    }
                    for c, s in drafts.items()
                ],
            },
            "depends_on": list(drafts.values()),
        },
        {
            "id": publish_id,
            "operation": "platform.publish",
            "args": {
                "base_url": inputs["platform_url"],
                "posts": {"$ref": f"steps.{package_id}.output.posts"},
            },
            "depends_on": [package_id],
            "on_failure": "replan",
            "rationale": "a human reviews before anything is public; a rejection is redrafted",
        },
        {
            "id": "remember",
            "operation": "memory.remember",
            "args": {
                "namespace": "content",
                "key": "published",
                "content": f"Published: {goal}",
                "data": {
                    "goal": goal,
                    "summary": {"$ref": f"steps.{package_id}.output.summary"},
                    "posts": {"$ref": f"steps.{publish_id}.output.posts"},
                },
                "reason": "what went out after the creator's review",
            },
            "depends_on": [publish_id, package_id],
        },
    ]
    why = (
        "redraft with the reviewer's feedback, then review again"
        if feedback
        else "draft, review, publish"
    )
    return {"rationale": why, "steps": steps}


def _latest(completed: set[str], channel: str) -> str | None:
    """The newest completed draft of ``channel`` (``draft_x``, ``redraft_x_2``...), if any."""
    best, best_n = None, 0
    for sid in completed:
        if sid == f"draft_{channel}":
            n = 1
        elif m := re.fullmatch(rf"redraft_{re.escape(channel)}_(\d+)", sid):
            n = int(m.group(1))
        else:
            continue
        if n > best_n:
            best, best_n = sid, n
    return best


def _sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        out[head.strip()] = body.strip()
    return out


def _completed(text: str) -> set[str]:
    match = re.search(r"Already succeeded: (.*?)\. Do not", text, re.S)
    return {s.strip() for s in match.group(1).split(",")} if match else set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8603)
    run_forever(ExampleLlm(), parser.parse_args().port, "example LLM")


if __name__ == "__main__":
    main()
