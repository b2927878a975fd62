"""sessionstate.openai_agents: the OpenAI Agents SDK's Session protocol, on every backend.

The protocol's behaviour (get_items and its limits, add_items all or nothing, pop_item,
clear_session), exact round trips of the SDK's items, sessionstate's own features on an SDK
session (listing, metadata, TTL, lifecycle, export/import), races between real processes on
first use, pop and add, and the SDK itself: Runner.run with a fake model, the second turn in a
new process reading the first turn's items from the database.
"""

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

agents = pytest.importorskip("agents", reason="the openai-agents extra is not installed")

import sessionstate  # noqa: E402
from sessionstate import InvalidStateData, aio  # noqa: E402
from sessionstate.openai_agents import (NAMESPACE, SessionStateSession,  # noqa: E402
                                        sessionstate_id)

from agents_workers import run_workers, turn  # noqa: E402

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
UTC = dt.timezone.utc


def arun(coroutine_function, *args):
    """Run coroutine_function(*args) on a new loop; sessionstate.aio is closed at its end."""
    async def main():
        try:
            return await coroutine_function(*args)
        finally:
            await aio.close()
    return asyncio.run(main())


def user(text):
    return {"role": "user", "content": text}


def assistant(text, item_id="msg_1"):
    return {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def exact(value):
    """A value with its types spelled out, so 1 == 1.0 == True no longer compare equal."""
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, value)


# The SDK's input items, as the Runner stores them: nested content lists, tool calls and their
# outputs, reasoning items, unicode, numbers of every kind.
SDK_ITEMS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Bonjour 👋 — what's the weather in Zürich? 東京は？"},
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Look at this: e\u0301 vs \u00e9, \u2028 \\ \"q\""},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
         "detail": "auto"},
        {"type": "input_file", "file_id": "file-abc123", "filename": "notes 📄.pdf"},
    ]},
    {"type": "reasoning", "id": "rs_0123456789abcdef", "summary": [
        {"type": "summary_text", "text": "The user wants two forecasts; call the tool twice."}],
     "encrypted_content": "gAAAAABo" + "x" * 200, "content": []},
    {"type": "function_call", "id": "fc_1", "call_id": "call_A1", "name": "get_weather",
     "arguments": json.dumps({"city": "Zürich", "units": "metric", "days": 3}),
     "status": "completed"},
    {"type": "function_call", "id": "fc_2", "call_id": "call_B2", "name": "get_weather",
     "arguments": "{\"city\":\"東京\"}", "status": "completed"},
    {"type": "function_call_output", "call_id": "call_A1",
     "output": json.dumps({"temp": 21.5, "sky": "☀", "wind": [3, 4.25, None]})},
    {"type": "function_call_output", "call_id": "call_B2", "output": [
        {"type": "input_text", "text": "雨 🌧 18 °C"}]},
    {"type": "message", "id": "msg_9", "role": "assistant", "status": "completed", "content": [
        {"type": "output_text", "text": "Zürich: 21.5 °C ☀; 東京: 18 °C 🌧",
         "annotations": [{"type": "url_citation", "start_index": 0, "end_index": 6,
                          "url": "https://example.com/w?q=z%C3%BCrich&x=1", "title": "W"}],
         "logprobs": []},
        {"type": "refusal", "refusal": ""}]},
    {"type": "custom", "numbers": [0, -1, 2**53, -(2**53), 1.0, 0.1, -2.5e-300, 1.5e15],
     "flags": [True, False, None], "empty": {"list": [], "dict": {}, "string": ""},
     "keys": {"ключ": "значение", "😀": 1, "": "empty key"}},
]


# -- the protocol, without a database -------------------------------------------------------

def test_it_is_an_sdk_session_by_the_protocol_not_the_abc():
    session = SessionStateSession("user-1")
    assert isinstance(session, agents.memory.Session)
    assert not isinstance(session, agents.memory.SessionABC)
    assert session.session_id == "user-1"
    assert session.session_settings == agents.memory.SessionSettings()


def test_the_session_id_names_one_sessionstate_id():
    assert sessionstate_id("user-1") == str(uuid.uuid5(NAMESPACE, "user-1"))
    assert sessionstate_id("user-1") == SessionStateSession("user-1").sessionstate_id
    ids = {sessionstate_id(text) for text in
           ("user-1", "user-2", "User-1", "user-1 ", "x" * 255, "😀", "a\x00b", "\ud800")}
    assert len(ids) == 8 and all(len(value) == 36 for value in ids)


@pytest.mark.parametrize("bad", ["", "x" * 256, None, 42, b"user-1"])
def test_a_session_id_must_be_a_string_of_1_to_255_characters(bad):
    with pytest.raises(InvalidStateData, match="session_id"):
        SessionStateSession(bad)
    with pytest.raises(ValueError):
        sessionstate_id(bad)


def test_session_settings_take_the_sdks_forms():
    assert SessionStateSession("s", session_settings={"limit": 3}).session_settings.limit == 3
    settings = agents.memory.SessionSettings(limit=5)
    assert SessionStateSession("s", session_settings=settings).session_settings is settings
    with pytest.raises(TypeError):
        SessionStateSession("s", session_settings=5)


def test_importing_sessionstate_never_imports_the_sdk():
    code = ("import sys, sessionstate, sessionstate.aio, sessionstate.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('agents', 'openai')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_sdk_the_error_names_the_extra():
    code = textwrap.dedent("""
        import sys
        class NoSDK:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "agents":
                    raise ImportError("No module named %r" % name)
        sys.meta_path.insert(0, NoSDK())
        import sessionstate
        try:
            import sessionstate.openai_agents
        except ImportError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'sessionstate[openai-agents]'" in result.stdout


# -- the protocol's behaviour, on every backend ---------------------------------------------

def test_the_protocol_on_one_history(migrated, url):
    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.add_items([user("one"), assistant("two")])
        await session.add_items([])
        await session.add_items([user("three")])
        everything = [user("one"), assistant("two"), user("three")]
        assert await session.get_items() == everything
        assert await session.get_items(limit=None) == everything
        for limit in (1, 2, 3, 4, 1000, 2**31 - 1, 2**40):
            assert await session.get_items(limit) == everything[-limit:], limit
        assert await session.get_items(0) == []
        assert await session.get_items(-1) == []
        assert await session.pop_item() == user("three")
        assert await session.get_items() == everything[:2]
        await session.add_items([user("four")])
        assert await session.pop_item() == user("four")
        assert await session.pop_item() == assistant("two")
        assert await session.pop_item() == user("one")
        assert await session.pop_item() is None
        assert await session.get_items() == []
        await session.add_items([user("five")])
        # A second object, as another worker would make, sees the same history.
        assert await SessionStateSession("chat-1", url=url).get_items() == [user("five")]
        assert await SessionStateSession("chat-2", url=url).get_items() == []
        return session

    session = arun(scenario)
    rows = sessionstate.list_sessions()
    assert sorted(row["session_id"] for row in rows) == sorted(
        [session.sessionstate_id, sessionstate_id("chat-2")])
    assert sessionstate.get_state(session.sessionstate_id).conversation_history == [
        user("five")]


def test_clear_session_empties_the_history_and_keeps_the_session(migrated, url):
    async def scenario():
        session = SessionStateSession("chat-1", url=url, user_id="alice", name="Trip",
                                      meta={"plan": "pro"})
        await session.add_items([user("a"), user("b")])
        await session.clear_session()
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.clear_session()  # an empty history clears too
        await session.add_items([user("c")])
        assert await session.get_items() == [user("c")]
        return session

    session = arun(scenario)
    exported = sessionstate.export_session(session.sessionstate_id)
    assert exported["session"]["name"] == "Trip"
    assert exported["session"]["user_id"] == "alice"
    assert exported["session"]["meta"] == {"plan": "pro",
                                           "openai_agents_session_id": "chat-1"}
    assert len(exported["states"]) == 1


def test_session_settings_limit_is_honoured_as_the_sdk_defines_it(migrated, url):
    items = [user(str(n)) for n in range(6)]

    async def scenario():
        session = SessionStateSession("chat-1", url=url, session_settings={"limit": 2})
        await session.add_items(items)
        assert await session.get_items() == items[-2:]  # the settings' limit
        assert await session.get_items(4) == items[-4:]  # an explicit one wins
        session.session_settings = agents.memory.SessionSettings()
        assert await session.get_items() == items  # no limit: everything
        unlimited = SessionStateSession("chat-1", url=url, session_settings={"limit": None})
        assert await unlimited.get_items() == items
        assert await SessionStateSession("chat-1", url=url, session_settings={
            "limit": 0}).get_items() == []

    arun(scenario)


def test_get_items_with_a_limit_is_sliced_in_the_database(migrated, url, monkeypatch):
    """A limited read asks the core for the tail (recent_messages), never the whole history."""
    calls = []

    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        await session.add_items([user(str(n)) for n in range(50)])
        real = aio.recent_messages

        async def recent_messages(state_id, limit):
            calls.append(limit)
            return await real(state_id, limit)

        async def no_whole_history(session_id):
            raise AssertionError("get_state read the whole history")

        monkeypatch.setattr(aio, "recent_messages", recent_messages)
        monkeypatch.setattr(aio, "get_state", no_whole_history)
        assert await session.get_items(3) == [user("47"), user("48"), user("49")]
        # A new object made per request finds its state without reading the history.
        assert await SessionStateSession("chat-1", url=url).get_items(1) == [user("49")]

    arun(scenario)
    assert calls == [3, 1]


def test_add_items_is_one_append_all_or_nothing(migrated, url, monkeypatch):
    appends = []

    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        await session.add_items([user("first")])  # creates the session holding it
        real = aio.append_messages

        async def append_messages(state_id, messages, *args):
            appends.append(len(messages))
            return await real(state_id, messages, *args)

        monkeypatch.setattr(aio, "append_messages", append_messages)
        batch = [user("a"), assistant("b"), {"type": "function_call_output",
                                             "call_id": "c", "output": "d"}]
        await session.add_items(batch)
        for bad in ({"content": float("nan")}, {"content": {1, 2}}, {"content": "nul\x00"},
                    {1: "non-string key"}):
            with pytest.raises(InvalidStateData):
                await session.add_items([user("kept?"), bad, user("kept?")])
        assert await session.get_items() == [user("first")] + batch

    arun(scenario)
    assert appends == [3] * 5  # each call: one append of the whole batch (the core's UPDATE)


def test_the_sdks_items_round_trip_exactly(migrated, url):
    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        await session.add_items(SDK_ITEMS[:3])
        await session.add_items(SDK_ITEMS[3:])
        everything = await session.get_items()
        tail = await session.get_items(4)
        fresh = await SessionStateSession("chat-1", url=url).get_items()
        popped = [await session.pop_item() for _ in SDK_ITEMS][::-1]
        return everything, tail, fresh, popped

    everything, tail, fresh, popped = arun(scenario)
    for got in (everything, fresh, popped):
        assert exact(got) == exact(SDK_ITEMS)
    assert exact(tail) == exact(SDK_ITEMS[-4:])


def test_a_session_id_of_any_characters(migrated, url):
    """NUL and lone surrogates cannot be stored as text: the id still maps, and the meta keeps
    the string as a JSON literal."""
    names = ["a\x00b", "\ud800x", "user 1", "😀" * 255, "x" * 255]

    async def scenario():
        for n, name in enumerate(names):
            await SessionStateSession(name, url=url).add_items([user(str(n))])
        return [await SessionStateSession(name, url=url).get_items() for name in names]

    assert arun(scenario) == [[user(str(n))] for n in range(len(names))]
    exported = {name: sessionstate.export_session(sessionstate_id(name))["session"]
                for name in names}
    assert exported["a\x00b"]["meta"] == {"openai_agents_session_id_json": '"a\\u0000b"'}
    assert json.loads(exported["\ud800x"]["meta"]["openai_agents_session_id_json"]) == "\ud800x"
    assert exported["\ud800x"]["name"] is None
    assert exported["😀" * 255]["name"] == "😀" * 255
    assert exported["user 1"]["meta"] == {"openai_agents_session_id": "user 1"}


# -- sessionstate's features on an SDK session ----------------------------------------------

def test_listing_metadata_and_ttl(migrated, url):
    before = dt.datetime.now(UTC)

    async def scenario():
        await SessionStateSession("chat-1", url=url, user_id="alice", name="Trip to Rome",
                                  meta={"plan": "pro", "tags": ["travel"]},
                                  ttl=3600).add_items([user("hi")])
        await SessionStateSession("chat-2", url=url, user_id="bob",
                                  mode="support-bot").get_items()
        # An existing session keeps what it was created with.
        await SessionStateSession("chat-1", url=url, user_id="mallory", name="other",
                                  ttl=1).add_items([user("again")])

    arun(scenario)
    after = dt.datetime.now(UTC)
    (alice,) = sessionstate.list_sessions(user_id="alice")
    assert alice["session_id"] == sessionstate_id("chat-1")
    assert alice["name"] == "Trip to Rome" and alice["mode"] == "openai-agents"
    assert alice["status"] == "active"
    (bob,) = sessionstate.list_sessions(user_id="bob")
    assert bob["name"] == "chat-2" and bob["mode"] == "support-bot"  # the id is the name
    assert sessionstate.list_sessions(user_id="mallory") == []
    state = sessionstate.get_state(sessionstate_id("chat-1"))
    assert state.conversation_history == [user("hi"), user("again")]
    lifetime = dt.timedelta(seconds=3600)
    assert before + lifetime <= state.expires_at <= after + lifetime
    assert sessionstate.get_state(sessionstate_id("chat-2")).expires_at is None
    exported = sessionstate.export_session(sessionstate_id("chat-1"))["session"]
    assert exported["meta"] == {"plan": "pro", "tags": ["travel"],
                                "openai_agents_session_id": "chat-1"}

    assert sessionstate.expire_due(now=after + lifetime + dt.timedelta(seconds=1)) == 1
    (expired,) = sessionstate.list_sessions(status="expired")
    assert expired["session_id"] == sessionstate_id("chat-1")


def test_suspend_resume_complete_and_reading_on(migrated, url):
    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        await session.add_items([user("a")])
        await aio.suspend(session.sessionstate_id)
        statuses = [(await aio.list_sessions())[0]["status"]]
        assert await session.get_items() == [user("a")]
        await aio.resume(session.sessionstate_id)
        await session.add_items([user("b")])
        await aio.complete(session.sessionstate_id)
        statuses.append((await aio.list_sessions())[0]["status"])
        assert await session.get_items() == [user("a"), user("b")]  # the record stays readable
        return statuses

    assert arun(scenario) == ["suspended", "completed"]


def test_export_then_import_elsewhere_continues_the_conversation(migrated, url, tmp_path):
    other = "sqlite:///%s" % (tmp_path / "other.db")
    sessionstate.migrate(sessionstate.connect(other))
    sessionstate.connect(url)

    async def scenario():
        session = SessionStateSession("chat-1", url=url, user_id="alice")
        await session.add_items(SDK_ITEMS)
        document = await aio.export_session(session.sessionstate_id)
        await aio.connect(other)
        await aio.import_session(document)
        moved = SessionStateSession("chat-1", url=other)
        assert exact(await moved.get_items()) == exact(SDK_ITEMS)
        await moved.add_items([user("continued")])
        assert await moved.get_items(2) == [SDK_ITEMS[-1], user("continued")]
        return document

    document = arun(scenario)
    assert document["session"]["user_id"] == "alice"
    assert len(sessionstate.get_state(sessionstate_id("chat-1")).conversation_history) == len(
        SDK_ITEMS)  # the source is unchanged


def test_a_session_deleted_behind_its_back_starts_afresh(migrated, url):
    async def scenario():
        session = SessionStateSession("chat-1", url=url, user_id="alice")
        await session.add_items([user("a")])
        await aio.delete_session(session.sessionstate_id)
        assert await session.get_items(5) == []
        await session.add_items([user("b")])
        assert await session.get_items() == [user("b")]
        await aio.delete_session(session.sessionstate_id)
        assert await session.pop_item() is None
        await aio.delete_session(session.sessionstate_id)
        await session.add_items([user("c")])
        return session

    session = arun(scenario)
    assert sessionstate.get_state(session.sessionstate_id).conversation_history == [user("c")]
    assert sessionstate.list_sessions()[0]["user_id"] == "alice"


def test_a_cancelled_write_is_whole_or_absent_and_the_session_goes_on(migrated, url):
    """The SDK cancels runs (guardrails, timeouts): a write cancelled at any point is either
    done whole or not at all, and the session's connection stays usable."""
    async def scenario():
        session = SessionStateSession("chat-1", url=url)
        await session.add_items([user("start")])
        outcomes = []
        for steps in range(8):
            task = asyncio.ensure_future(session.add_items(
                [user("a%d" % steps), user("b%d" % steps)]))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
                outcomes.append("done")
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        await session.add_items([user("tail")])  # what the cancelled pop may take
        pop = asyncio.ensure_future(session.pop_item())
        await asyncio.sleep(0)
        pop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pop
        await session.add_items([user("end")])
        return outcomes, await session.get_items()

    outcomes, items = arun(scenario)
    assert "cancelled" in outcomes
    texts = [item["content"] for item in items]
    assert texts[0] == "start" and texts[-1] == "end"
    assert texts.count("tail") <= 1
    for steps in range(8):
        assert ("a%d" % steps in texts) == ("b%d" % steps in texts), texts
        if "a%d" % steps in texts:
            assert texts.index("b%d" % steps) == texts.index("a%d" % steps) + 1


def test_without_a_url_it_uses_the_connected_async_database(migrated, url):
    async def scenario():
        await aio.connect(url)
        session = SessionStateSession("chat-1")
        await session.add_items([user("a")])
        return await session.get_items()

    assert arun(scenario) == [user("a")]
    assert sessionstate.get_state(sessionstate_id("chat-1")).conversation_history == [user("a")]


def test_one_session_object_on_successive_event_loops(migrated, url):
    """asyncio.run after asyncio.run, each closing sessionstate.aio at its end: the session
    connects its url again on each new loop (not aio's default database)."""
    session = SessionStateSession("chat-1", url=url)
    arun(session.add_items, [user("a")])
    arun(session.add_items, [user("b")])
    assert arun(session.get_items) == [user("a"), user("b")]
    assert sessionstate.get_state(session.sessionstate_id).conversation_history == [
        user("a"), user("b")]


# -- real processes -------------------------------------------------------------------------

WORKERS = 4


def assert_no_errors(reports):
    seen = {index: errors for index, (_, errors) in enumerate(reports) if errors}
    assert seen == {}, "workers met exceptions: %r" % (seen,)


@pytest.mark.parametrize("first_call", ["add_items", "get_items"])
def test_processes_first_using_one_session_id_at_once_share_one_session(migrated, url,
                                                                        first_call):
    reports = run_workers("first_use", url, "shared-chat", first_call, count=WORKERS)

    assert_no_errors(reports)
    assert {payload for payload, _ in reports} == {sessionstate_id("shared-chat")}
    rows = sessionstate.list_sessions()
    assert [row["session_id"] for row in rows] == [sessionstate_id("shared-chat")]
    history = sessionstate.get_state(sessionstate_id("shared-chat")).conversation_history
    assert sorted(item["worker"] for item in history) == list(range(WORKERS))
    exported = sessionstate.export_session(sessionstate_id("shared-chat"))
    assert len(exported["states"]) == 1


def test_processes_popping_never_share_or_lose_an_item(migrated, url):
    items = [{"role": "user", "content": "item %d" % n, "n": n} for n in range(120)]
    arun(SessionStateSession("popped", url=url).add_items, items)

    reports = run_workers("pop", url, "popped", count=WORKERS)

    assert_no_errors(reports)
    popped = [item["n"] for payload, _ in reports for item in payload]
    assert sorted(popped) == list(range(120))  # every item exactly once
    for payload, _ in reports:  # each worker saw the history shrink from its end
        numbers = [item["n"] for item in payload]
        assert numbers == sorted(numbers, reverse=True)
    assert sessionstate.get_state(sessionstate_id("popped")).conversation_history == []


def test_processes_popping_and_adding_lose_and_duplicate_nothing(migrated, url):
    seed = [{"seed": n} for n in range(20)]
    arun(SessionStateSession("busy", url=url).add_items, seed)
    per_worker = 40

    reports = run_workers("pop_and_add", url, "busy", per_worker, count=WORKERS)

    assert_no_errors(reports)
    added = [item for (what, items), _ in reports if what == "added" for item in items]
    popped = [item for (what, items), _ in reports if what == "popped" for item in items]
    remaining = sessionstate.get_state(sessionstate_id("busy")).conversation_history
    key = lambda item: json.dumps(item, sort_keys=True)  # noqa: E731
    assert len(added) == (WORKERS // 2) * per_worker * 2
    # What was popped and what is left are, together, exactly what was ever added.
    assert sorted(map(key, popped + remaining)) == sorted(map(key, seed + added))
    assert len(set(map(key, popped))) == len(popped)
    # An add_items call's two items went in together: when both are left, they are adjacent
    # and in order (a pop takes from the end, so nothing can come between them).
    position = {key(item): index for index, item in enumerate(remaining)}
    for item in remaining:
        if item.get("part") == 0 and key(dict(item, part=1)) in position:
            assert position[key(dict(item, part=1))] == position[key(item)] + 1


# -- the SDK itself -------------------------------------------------------------------------

def second_turn(url, session_id, text, mode="plain"):
    """A turn in a new process (python -m agents_workers turn ...); its JSON report."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-m", "agents_workers", "turn", url, session_id,
                             text, mode], capture_output=True, text=True, timeout=120,
                            env=env, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("mode", ["plain", "streamed"])
def test_two_turns_of_runner_the_second_in_a_new_process(migrated, url, mode):
    first = arun(turn, url, "conversation-1", "What's the weather in Paris?")
    assert first["final_output"] == "Forecast: sunny in Paris, 22 °C ☀"
    turn_one = sessionstate.get_state(sessionstate_id("conversation-1")).conversation_history
    kinds = [item.get("type", "message") for item in turn_one]
    assert kinds == ["message", "reasoning", "function_call", "function_call_output",
                     "message"]
    assert turn_one[0] == user("What's the weather in Paris?")

    second = second_turn(url, "conversation-1", "What did I ask you?", mode)

    # The new process's model was sent turn one's items, from the database, then the question.
    sent = second["model_inputs"][0]
    assert exact(sent[:len(turn_one)]) == exact(turn_one)
    assert sent[len(turn_one):] == [user("What did I ask you?")]
    assert second["final_output"] == "first: What's the weather in Paris?; items: 6"
    history = sessionstate.get_state(sessionstate_id("conversation-1")).conversation_history
    assert exact(history[:len(turn_one)]) == exact(turn_one)
    assert history[len(turn_one)] == user("What did I ask you?")
    assert history[-1]["content"][0]["text"] == second["final_output"]
    assert len(history) == len(turn_one) + 2


def test_the_readme_example_runs(migrated, url):
    """The README's SDK example, with the fake model standing in for OpenAI's."""
    block = next(code for code in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                 if "SessionStateSession" in code)
    prelude = textwrap.dedent("""
        import agents
        from fake_model import FakeModel
        agents.set_tracing_disabled(True)
        _run = agents.Runner.run
        async def run(*args, **kwargs):
            kwargs["run_config"] = agents.RunConfig(model=FakeModel())
            return await _run(*args, **kwargs)
        agents.Runner.run = run
    """)
    env = dict(os.environ, SESSIONSTATE_DATABASE_URL=url, PYTHONPATH=str(TESTS))
    result = subprocess.run([sys.executable, "-c", prelude + block], capture_output=True,
                            text=True, timeout=120, env=env, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    assert "first: " in result.stdout
    rows = sessionstate.list_sessions()
    assert len(rows) == 1 and rows[0]["mode"] == "openai-agents"
