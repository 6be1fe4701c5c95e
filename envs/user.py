"""A conversation with a simulated user on the other side, as tau-bench plays its retail and airline
domains (``tau_bench/envs/base.py``, ``agents/tool_calling_agent.py``).

The user is whoever plays the ``"user"`` side of :func:`agents.rollout.play` (an LLM told its goal,
or a script in tests); this wrapper keeps the turns and the end as upstream does.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.actions import CodeAction, Malformed, parse_action, shown
from envs.cat import ToolCall

STOP = "###STOP###"
GREETING = "Hi! How can I help you today?"

USER_PROMPT = """\
You are a customer talking with a customer-service agent; you write the customer's messages.

Your goal:
{instruction}

How to talk:
- Write one short message at a time, as the customer would.
- Give only what the agent needs for the current step; never the whole goal at once.
- Never invent facts that your goal does not give (an order id, a date): if asked for one you lack,
  say you don't have it.
- Don't copy your goal's wording; say it in your own words, in the personality it describes.
- Once your goal is met, reply with ###STOP### alone, to end the conversation."""


def said_to_user(action: Any, max_length: int) -> tuple[Any, str | None]:
    """The action to step the env with, and what it says to the user (``None``: not a message).
    As upstream, a turn that holds no tool call is a message to the user: code too (a ```python block),
    which upstream's agents cannot run. Such a message goes on as the ``respond`` call it stands for,
    already read: as JSON text its escapes would count against the env's length limit, which is the
    message's own. An action that is not text, or is over the limit, goes on as it is, for the env
    to refuse."""
    if not isinstance(action, str) or len(action) > max_length:
        return action, None
    parsed = parse_action(action)
    if isinstance(parsed, (Malformed, CodeAction)):
        return ToolCall("respond", {"content": action}), action
    if isinstance(parsed, ToolCall) and parsed.name == "respond" and isinstance(parsed.arguments.get("content"), str):
        return action, parsed.arguments["content"]
    return action, None


class SimulatedUser(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A retail or airline env with a simulated user on the other side.

    ## Description
    The task's instruction is the user's hidden goal: the agent never sees it. The user speaks first
    (answering the agent's greeting); then the agent acts. A tool call's output comes back to the
    agent; a ``respond``, or a message that holds no tool call, goes to the user, who answers. The
    user ends the conversation by writing ``###STOP###`` (once the agent has said something), and
    the reward is computed then.

    ## Action Space
    Text: the message of whoever's turn it is (``info["speaker"]``: ``"user"`` or ``"agent"``).
    ``None`` is no action: no turn passes. An agent's action that is not text is refused as the env
    refuses it; a user's is read as its ``repr`` (shortened).

    ## Observation Space
    Text, for whoever speaks next: the user's message (to the agent), the agent's message (to the
    user), or a tool's output (to the agent). After ``reset``: the user's goal, for the user side.

    ## Rewards
    0 until the end; then, when the user stops or a terminal tool (or ``finish``) ends it, the
    task's verifier's 1.0 or 0.0. A conversation cut at the step limit scores 0, as upstream's
    (``info["verifier"]["kind"] == "step_limit"``, its message saying what the final state alone got).

    ## Starting State
    The wrapped env's reset; ``info["user_prompt"]`` is the user's brief (its goal inside),
    ``info["greeting"]`` what the user answers first, ``info["speaker"]`` is ``"user"``.

    ## Episode End
    Terminated when the user stops (``info["end_reason"] == "user_stop"``) or the env terminates;
    truncated after the env's ``max_turns`` agent steps (tau-bench: 30). A message to the user on the
    last step still gets its answer, which may stop the conversation and score it, as upstream's user
    answers inside the agent's step; any other answer then ends the episode, truncated. After the
    end every step is an error observation until ``reset``, as the env's own. A message the env
    refuses (over ``max_action_length``) comes back to the agent with the reason, not to the user.

    ## Rendering
    The env's ``"ansi"`` transcript, with the user's messages in it and the user's goal first.

    ## Arguments
    ``policy``: the agent's system text in place of the env's (tau-bench's ``wiki.md``).
    """

    def __init__(self, env: gym.Env, policy: str | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, policy=policy)  # so that gym.make(env.spec) rebuilds it
        super().__init__(env)
        self.agent_policy = policy
        self._speaker = "agent"  # before the first reset as after an end: the env's error, whoever speaks
        self._agent_steps = 0
        self._last_word = False  # the agent's last step was a message to the user: the user's answer ends it
        self._info: dict[str, Any] = {}

    def _tagged(self, info: dict[str, Any]) -> dict[str, Any]:
        self._info = {**info, "speaker": self._speaker}
        if self.agent_policy is not None:
            self._info["policy"] = self.agent_policy
        return self._info

    def reset(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        instruction, info = self.env.reset(**kwargs)
        self._speaker, self._agent_steps, self._last_word = "user", 0, False
        self.env.unwrapped.transcript[0] = ("user's goal", instruction)  # the user's, unseen by the agent
        info = self._tagged(info)
        info.update(user_prompt=USER_PROMPT.format(instruction=instruction), greeting=GREETING)
        return instruction, info

    def step(self, action: str | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if action is None:
            return "", 0.0, False, False, self._info
        if self._speaker == "user":
            self._speaker = "agent"  # the message is the agent's to read, the last one included
            message = action if isinstance(action, str) else shown(action)
            action = self.observation_space.fit(message)  # what the agent reads; the stop is in the whole message
            self.env.unwrapped.transcript.append(("user", action))
            if self._agent_steps and STOP in message:
                result = self.env.unwrapped.end()
                info = {**self._tagged(self._info), "end_reason": "user_stop", **self.env.unwrapped.ending(result)}
                return action, 1.0 if result.status == "ok" else 0.0, True, False, info
            return action, 0.0, False, self._last_word, self._tagged(self._info)
        self._agent_steps += 1
        step_action, said = said_to_user(action, self.env.action_space.max_length)
        observation, reward, terminated, truncated, info = self.env.step(step_action)
        if "invalid_action" in info:
            said = None  # refused (too long, or after the end): the agent reads why, the user hears nothing
        if said is not None:  # the user answers it: the env's note that no user listens is no one's to read
            self.env.unwrapped.transcript.pop()
        if truncated and not terminated and "verifier" in info:  # still going at the limit: 0, as upstream's
            info["verifier"] = {"status": "failed", "kind": "step_limit",
                                "message": f"the conversation was still going after {self._agent_steps} agent "
                                           f"step{'s' * (self._agent_steps != 1)} (the final state alone: "
                                           f"{info['verifier']['status']})"}
        if truncated and not terminated and said is not None:  # the verdict stands unless the user stops
            self._speaker, self._last_word = "user", True
            return self.observation_space.fit(said), 0.0, False, False, self._tagged(info)
        if terminated or truncated:
            return observation, float(reward) if terminated else 0.0, terminated, truncated, self._tagged(info)
        if said is not None:
            self._speaker = "user"
            return self.observation_space.fit(said), 0.0, False, False, self._tagged(info)
        return observation, 0.0, False, False, self._tagged(info)
