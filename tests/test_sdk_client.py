"""The MCP Python SDK's streamable HTTP client, talking through the gateway to tests/stdio_server.py.

Each test drives one MCP feature end to end: the SDK client speaks streamable HTTP to the gateway, the
gateway pipes the session to a stdio server process, and the assertion checks the content that came
back, so a request, response or notification lost or mangled in either direction fails the test.

Tests that take the `gateway` fixture run in both upstream modes: session (a process per session) and pool
(sessions share the pool's processes). The few that differ by design have one test per mode.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from tests.fixtures.gateway import RunningGateway, StartGateway

# Logging, sampling and resources/subscribe are deprecated only for the 2026 protocol era; the gateway
# carries the handshake era, where they are current.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

# Generous: the machine is shared, and a lost message must fail the test rather than hang it.
WAIT = 30.0
UPSTREAM = f"{sys.executable} -m tests.stdio_server"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Inbox:
    """Server notifications one client received, with a way to wait for a particular one."""

    def __init__(self) -> None:
        self.messages: list[IncomingMessage] = []
        self._changed = anyio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[list[IncomingMessage]], bool]) -> list[IncomingMessage]:
        with anyio.fail_after(WAIT):
            while not predicate(self.messages):
                await self._changed.wait()
        return self.messages

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [message for message in self.messages if isinstance(message, kind)]


class SessionIdRecorder:
    """httpx2 response hook that remembers the Mcp-Session-Id the gateway assigned and the DELETE status."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.delete_status: int | None = None

    async def __call__(self, response: httpx2.Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_id = session_id
        if response.request.method == "DELETE":
            self.delete_status = response.status_code


@pytest.fixture(params=["session", "pool"])
def gateway(request: pytest.FixtureRequest, gateway_factory: StartGateway) -> RunningGateway:
    """A gateway in front of tests/stdio_server.py, in each upstream mode."""
    return gateway_factory(upstream_command=UPSTREAM, env={"UPSTREAM_MODE": request.param})


@pytest.fixture
def session_gateway(gateway_factory: StartGateway) -> RunningGateway:
    return gateway_factory(upstream_command=UPSTREAM, env={"UPSTREAM_MODE": "session"})


@pytest.fixture
def pool_gateway(gateway_factory: StartGateway) -> RunningGateway:
    return gateway_factory(upstream_command=UPSTREAM, env={"UPSTREAM_MODE": "pool", "POOL_MIN": "1"})


def connect(gateway: RunningGateway, **options: Any) -> Client:
    """A handshake-era SDK client for the gateway's MCP endpoint."""
    options.setdefault("mode", "legacy")
    return Client(gateway.mcp_url, **options)


def text_of(result: types.CallToolResult | types.GetPromptResult) -> str:
    if isinstance(result, types.GetPromptResult):
        contents = [message.content for message in result.messages]
    else:
        contents = list(result.content)
    return "\n".join(content.text for content in contents if isinstance(content, types.TextContent))


@asynccontextmanager
async def recorded_client(gateway: RunningGateway, recorder: SessionIdRecorder) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0), event_hooks={"response": [recorder]})
    async with http, Client(streamable_http_client(gateway.mcp_url, http_client=http), mode="legacy") as client:
        yield client


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- lifecycle ---------------------------------------------------------------------------------------------


async def test_initialize_returns_the_upstream_server_info_and_capabilities(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        assert client.protocol_version == LATEST_HANDSHAKE_VERSION
        assert client.server_info is not None
        assert client.server_info.name == "cnpg-mcp-test-server"
        capabilities = client.server_capabilities
        assert capabilities.tools is not None and capabilities.tools.list_changed
        assert capabilities.resources is not None  # subscribe: true in session mode only (tests below)
        assert capabilities.prompts is not None
        assert capabilities.logging is not None


async def test_default_auto_client_falls_back_to_a_handshake_session_in_session_mode(
    session_gateway: RunningGateway,
) -> None:
    # mode="auto" probes server/discover first; session mode does not offer 2026-07-28, so the client falls back
    # to initialize through the gateway.
    async with Client(session_gateway.mcp_url) as client:
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        result = await client.call_tool("echo", {"text": "after the probe"})
        assert text_of(result) == "after the probe"


async def test_default_auto_client_lands_on_2026_07_28_in_pool_mode(pool_gateway: RunningGateway) -> None:
    # The pool serves the stateless protocol when its processes speak it, so the probe succeeds.
    async with Client(pool_gateway.mcp_url) as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("echo", {"text": "after the probe"})
        assert text_of(result) == "after the probe"


async def test_ping_is_answered(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        assert await client.send_ping() == types.EmptyResult()


# --- tools -------------------------------------------------------------------------------------------------


async def test_tools_list_carries_names_and_schemas_unchanged(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"echo", "slow", "test_sampling", "json_schema_2020_12_tool"} <= tools.keys()
    schema = tools["json_schema_2020_12_tool"].input_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["address"]["properties"]["city"] == {"type": "string"}
    assert schema["additionalProperties"] is False


async def test_echo_round_trips_unicode_and_json_special_characters(gateway: RunningGateway) -> None:
    payload = 'naïve "quotes" \\ back\nslash — 日本語 🐘'
    async with connect(gateway) as client:
        result = await client.call_tool("echo", {"text": payload})
    assert not result.is_error
    assert text_of(result) == payload


async def test_tool_image_content_arrives_as_valid_base64_png(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        result = await client.call_tool("test_image_content", {})
    (image,) = result.content
    assert isinstance(image, types.ImageContent)
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(PNG_MAGIC)


async def test_tool_failure_is_an_is_error_result(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        result = await client.call_tool("test_error_handling", {})
    assert result.is_error
    assert text_of(result) == "This tool intentionally returns an error for testing"


async def test_unknown_tool_is_a_json_rpc_invalid_params_error(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("no_such_tool", {})
        assert raised.value.code == types.INVALID_PARAMS
        assert "no_such_tool" in raised.value.message
        # The session survives the error.
        assert text_of(await client.call_tool("echo", {"text": "still here"})) == "still here"


async def test_a_slow_call_does_not_block_other_requests_of_the_session(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        slow_done = anyio.Event()

        async def slow_call() -> None:
            await client.call_tool("slow", {"ms": 20_000})
            slow_done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slow_call)
            with anyio.fail_after(WAIT):
                result = await client.call_tool("echo", {"text": "overtakes"})
            assert text_of(result) == "overtakes"
            assert not slow_done.is_set()
            tasks.cancel_scope.cancel()


# --- progress, logging, sampling, elicitation --------------------------------------------------------------


async def test_progress_notifications_reach_the_progress_callback_in_order(gateway: RunningGateway) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with connect(gateway) as client:
        result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert text_of(result) == "Tool with progress executed successfully"
    assert updates == [(0, 100, "step 1 of 3"), (50, 100, "step 2 of 3"), (100, 100, "step 3 of 3")]


async def test_log_notifications_reach_the_logging_callback(gateway: RunningGateway) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)
        if len(logs) == 3:
            arrived.set()

    async with connect(gateway, logging_callback=on_log) as client:
        assert await client.set_logging_level("debug") == types.EmptyResult()
        await client.call_tool("test_tool_with_logging", {})
        with anyio.fail_after(WAIT):
            await arrived.wait()
    assert [(log.level, log.data) for log in logs] == [
        ("info", "Tool execution started"),
        ("info", "Tool processing data"),
        ("info", "Tool execution completed"),
    ]


async def test_sampling_request_is_answered_by_the_client_callback(gateway: RunningGateway) -> None:
    prompts: list[str] = []

    async def sample(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        (message,) = params.messages
        assert isinstance(message.content, types.TextContent)
        prompts.append(message.content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test-model"
        )

    async with connect(gateway, sampling_callback=sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "What is six times seven?"})
    assert prompts == ["What is six times seven?"]
    assert text_of(result) == "LLM response: forty-two"


async def test_elicitation_request_is_answered_by_the_client_callback(gateway: RunningGateway) -> None:
    seen: list[types.ElicitRequestParams] = []

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        seen.append(params)
        return types.ElicitResult(action="accept", content={"username": "alice", "email": "alice@example.com"})

    async with connect(gateway, elicitation_callback=elicit) as client:
        result = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    (request,) = seen
    assert isinstance(request, types.ElicitRequestFormParams)
    assert request.message == "Who are you?"
    assert request.requested_schema["required"] == ["username", "email"]
    assert text_of(result) == (
        'Elicitation completed: action=accept, content={"username": "alice", "email": "alice@example.com"}'
    )


async def test_declined_elicitation_reaches_the_tool(gateway: RunningGateway) -> None:
    async def decline(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="decline")

    async with connect(gateway, elicitation_callback=decline) as client:
        result = await client.call_tool("test_elicitation", {"message": "Share your email?"})
    assert text_of(result) == "Elicitation completed: action=decline, content=null"


async def test_a_call_outliving_its_sse_stream_resumes_with_last_event_id(gateway_factory: StartGateway) -> None:
    # A polling gateway ends a request's stream after 0.25 s; the client comes back 200 ms later.
    gateway = gateway_factory(upstream_command=UPSTREAM, args=["--sse-close-after", "0.25", "--sse-retry-ms", "200"])
    resumed_from: list[str] = []

    async def on_request(request: httpx2.Request) -> None:
        if request.method == "GET" and "last-event-id" in request.headers:
            resumed_from.append(request.headers["last-event-id"])

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0), event_hooks={"request": [on_request]})
    async with http, Client(streamable_http_client(gateway.mcp_url, http_client=http), mode="legacy") as client:
        with anyio.fail_after(WAIT):
            result = await client.call_tool("slow", {"ms": 1500})
    assert text_of(result) == "slept 1500 ms"
    assert resumed_from, "the client never had to resume: the gateway did not close the stream early"


# --- resources ---------------------------------------------------------------------------------------------


async def test_resources_list_and_read_text(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        listed = {resource.uri for resource in (await client.list_resources()).resources}
        read = await client.read_resource("test://static-text")
    assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= listed
    (contents,) = read.contents
    assert isinstance(contents, types.TextResourceContents)
    assert contents.text == "This is the content of the static text resource."
    assert contents.mime_type == "text/plain"


async def test_binary_resource_arrives_as_base64_blob(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        read = await client.read_resource("test://static-binary")
    (contents,) = read.contents
    assert isinstance(contents, types.BlobResourceContents)
    assert base64.b64decode(contents.blob).startswith(PNG_MAGIC)


async def test_resource_template_is_listed_and_expanded(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        templates = (await client.list_resource_templates()).resource_templates
        read = await client.read_resource("test://template/abc-7/data")
    assert [template.uri_template for template in templates] == ["test://template/{id}/data"]
    (contents,) = read.contents
    assert isinstance(contents, types.TextResourceContents)
    assert '"id": "abc-7"' in contents.text


async def test_unknown_resource_is_a_json_rpc_error(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        with pytest.raises(MCPError) as raised:
            await client.read_resource("test://missing")
    assert raised.value.code == -32002


async def test_subscribed_resource_update_is_delivered_and_unsubscribe_stops_it(
    session_gateway: RunningGateway,
) -> None:
    inbox = Inbox()
    uri = "test://watched-resource"
    async with connect(session_gateway, message_handler=inbox) as client:
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe
        await client.subscribe_resource(uri)
        assert text_of(await client.call_tool("touch_resource", {"uri": uri})) == f"updated: {uri}"
        await inbox.wait_for(lambda _: bool(inbox.of_type(types.ResourceUpdatedNotification)))
        (update,) = inbox.of_type(types.ResourceUpdatedNotification)
        assert update.params.uri == uri

        await client.unsubscribe_resource(uri)
        assert text_of(await client.call_tool("touch_resource", {"uri": uri})) == f"not subscribed: {uri}"


# --- prompts and completion --------------------------------------------------------------------------------


async def test_prompts_list_and_get_with_arguments(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        names = {prompt.name for prompt in (await client.list_prompts()).prompts}
        prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "hello", "arg2": "world"})
    assert {"test_simple_prompt", "test_prompt_with_arguments", "test_prompt_with_image"} <= names
    assert text_of(prompt) == "Prompt with arguments: arg1='hello', arg2='world'"


async def test_prompt_with_embedded_resource_keeps_the_resource(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        prompt = await client.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://doc"})
    embedded = prompt.messages[0].content
    assert isinstance(embedded, types.EmbeddedResource)
    assert embedded.resource.uri == "test://doc"


async def test_completion_filters_values_by_prefix(gateway: RunningGateway) -> None:
    async with connect(gateway) as client:
        result = await client.complete(
            types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments"),
            {"name": "arg1", "value": "par"},
        )
    assert result.completion.values == ["paris", "park", "party"]


# --- list_changed ------------------------------------------------------------------------------------------


async def test_list_changed_notifications_are_delivered_and_lists_refresh(gateway: RunningGateway) -> None:
    inbox = Inbox()
    wanted = (
        types.ToolListChangedNotification,
        types.ResourceListChangedNotification,
        types.PromptListChangedNotification,
    )
    async with connect(gateway, message_handler=inbox) as client:
        await client.call_tool("change_lists", {})
        await inbox.wait_for(lambda _: all(inbox.of_type(kind) for kind in wanted))
        tools = {tool.name for tool in (await client.list_tools(cache_mode="refresh")).tools}
        resources = {resource.uri for resource in (await client.list_resources(cache_mode="refresh")).resources}
        prompts = {prompt.name for prompt in (await client.list_prompts(cache_mode="refresh")).prompts}
    assert "extra_tool" in tools
    assert "test://extra" in resources
    assert "extra_prompt" in prompts


# --- sessions ----------------------------------------------------------------------------------------------


async def test_pool_mode_refuses_resource_subscriptions(pool_gateway: RunningGateway) -> None:
    async with connect(pool_gateway) as client:
        capabilities = client.server_capabilities
        assert capabilities.resources is not None and not capabilities.resources.subscribe
        with pytest.raises(MCPError) as raised:
            await client.subscribe_resource("test://watched-resource")
        assert raised.value.code == types.METHOD_NOT_FOUND
        assert "cannot be kept per session" in raised.value.message


async def test_closing_the_client_deletes_the_session_and_ends_its_process(session_gateway: RunningGateway) -> None:
    gateway = session_gateway
    recorder = SessionIdRecorder()
    async with recorded_client(gateway, recorder) as client:
        pid = int(text_of(await client.call_tool("whoami", {})))
        assert process_exists(pid)
    assert recorder.session_id
    assert recorder.delete_status in (200, 204)

    # Another process's exit has no event to await; polling is the only way to observe it.
    with anyio.fail_after(WAIT):
        while process_exists(pid):  # noqa: ASYNC110
            await anyio.sleep(0.05)

    # The terminated session id is unknown from now on (streamable HTTP: 404 Not Found).
    async with httpx2.AsyncClient(timeout=WAIT) as http:
        response = await http.post(
            gateway.mcp_url,
            headers={
                "Mcp-Session-Id": recorder.session_id,
                "Mcp-Protocol-Version": LATEST_HANDSHAKE_VERSION,
                "Accept": "application/json, text/event-stream",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    assert response.status_code == 404


async def test_pool_mode_closing_the_client_deletes_the_session_and_keeps_the_process(
    pool_gateway: RunningGateway,
) -> None:
    recorder = SessionIdRecorder()
    async with recorded_client(pool_gateway, recorder) as client:
        pid = int(text_of(await client.call_tool("whoami", {})))
    assert recorder.delete_status in (200, 204)
    assert process_exists(pid), "the pool's process serves the next session"
    async with connect(pool_gateway) as client:
        assert int(text_of(await client.call_tool("whoami", {}))) == pid


async def test_pool_mode_upstream_crash_fails_the_pending_call_and_the_session_goes_on(
    pool_gateway: RunningGateway,
) -> None:
    async with connect(pool_gateway) as client:
        pid = int(text_of(await client.call_tool("whoami", {})))
        with anyio.fail_after(WAIT), pytest.raises(MCPError):
            await client.call_tool("crash", {"code": 7})
        with anyio.fail_after(WAIT):
            assert text_of(await client.call_tool("echo", {"text": "still here"})) == "still here"
            assert int(text_of(await client.call_tool("whoami", {}))) != pid


async def test_upstream_crash_fails_the_pending_call_and_ends_the_session(session_gateway: RunningGateway) -> None:
    gateway = session_gateway
    async with connect(gateway) as client:
        pid = int(text_of(await client.call_tool("whoami", {})))
        with anyio.fail_after(WAIT), pytest.raises(MCPError):
            await client.call_tool("crash", {"code": 7})
        # The session died with its process: later requests are refused instead of hanging.
        with anyio.fail_after(WAIT), pytest.raises(MCPError):
            await client.call_tool("echo", {"text": "anyone there?"})
    assert not process_exists(pid)


async def test_concurrent_sessions_have_separate_processes_and_state(session_gateway: RunningGateway) -> None:
    gateway = session_gateway
    async with connect(gateway) as first, connect(gateway) as second:
        first_pid, second_pid = [int(text_of(await c.call_tool("whoami", {}))) for c in (first, second)]
        assert first_pid != second_pid

        await first.call_tool("change_lists", {})
        first_tools = {tool.name for tool in (await first.list_tools(cache_mode="refresh")).tools}
        second_tools = {tool.name for tool in (await second.list_tools(cache_mode="refresh")).tools}
    assert "extra_tool" in first_tools
    assert "extra_tool" not in second_tools
