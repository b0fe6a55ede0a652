"""A stdio MCP server that exercises every feature the gateway must carry.

Run it as ``python -m tests.stdio_server``: it speaks newline-delimited JSON-RPC on stdin/stdout, like any
upstream the gateway spawns. It implements the fixtures the MCP conformance suite's server scenarios ask for
(tool, resource and prompt names and payloads are fixed by that suite) plus a few tools for the project's
own tests: a fast ``echo`` for benchmarks, ``slow`` for drain and timeout tests, ``crash`` for fault tests,
``whoami`` to tell sessions apart by process, ``change_lists`` for list_changed notifications and
``touch_resource`` for resource subscriptions.

The module-level ``State`` belongs to the process. In session mode a process serves exactly one MCP session, so it
is that session's state. In pool mode a process serves many sessions, one at a time: the gateway initializes it
and sets its log level once, refuses subscriptions itself, and a ``change_lists`` call changes the lists that every
later session on that process sees, as a real server's list change would.

For MCP 2026-07-28 (which the SDK's stdio loop serves when the first request carries the 2026 ``_meta`` envelope) it
adds the fixtures of the suite's 2026 scenarios: the ``test_input_required_result_*`` tools and prompt, which answer
with input-required results and take the retry, ``test_missing_capability``, and ``test_param_headers``, whose input
schema marks arguments with ``x-mcp-header`` (the gateway checks the ``Mcp-Param-*`` headers against them). The
``requestState`` of the input-required fixtures is signed with STDIO_SERVER_STATE_KEY (a key of this process when
unset), so every process given the same key accepts the states of the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

# Logging, sampling and subscriptions are deprecated only in the 2026 protocol era; the handshake era
# the gateway speaks still has them, so the warnings are noise on stderr.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A 1x1 red PNG and a tiny silent WAV: the smallest valid payloads of each kind.
RED_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
SILENT_WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQIAAAAAAA=="

LOG_LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass
class State:
    """What one session has changed: its log threshold, subscriptions and whether the extras are listed."""

    log_level: types.LoggingLevel = "info"
    subscriptions: set[str] = field(default_factory=set)
    extras: bool = False


STATE = State()


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema or NO_ARGS)


def string_args(*names: str, required: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names) if required else [],
    }


TOOLS: list[types.Tool] = [
    tool("test_simple_text", "Returns a simple text response"),
    tool("test_image_content", "Returns a PNG image"),
    tool("test_audio_content", "Returns a WAV audio clip"),
    tool("test_embedded_resource", "Returns an embedded text resource"),
    tool("test_multiple_content_types", "Returns text, image and an embedded resource"),
    tool("test_tool_with_logging", "Sends three info log notifications while running"),
    tool("test_error_handling", "Always fails with an isError result"),
    tool("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100"),
    tool("test_sampling", "Asks the client's LLM to answer a prompt", string_args("prompt")),
    tool("test_elicitation", "Asks the user for a username and email", string_args("message")),
    tool("test_elicitation_sep1034_defaults", "Elicits a form whose fields all carry defaults"),
    tool("test_elicitation_sep1330_enums", "Elicits a form with every enum variant"),
    tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "$anchor": "address",
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "allOf": [{"anyOf": [{"type": "object"}, {"required": ["name"]}]}],
            "if": {"properties": {"name": {"const": "anonymous"}}},
            "then": {"properties": {"address": {"type": "object"}}},
            "else": {"properties": {"name": {"minLength": 1}}},
            "additionalProperties": False,
        },
    ),
    tool("test_reconnection", "Answers after a pause long enough for the HTTP side to poll"),
    tool("echo", "Returns its text argument unchanged", string_args("text")),
    tool(
        "slow",
        "Sleeps for ms milliseconds, then answers",
        {"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]},
    ),
    tool(
        "crash",
        "Exits the server process immediately with the given code (default 3)",
        {"type": "object", "properties": {"code": {"type": "integer"}}},
    ),
    tool("whoami", "Returns this server process's pid"),
    tool(
        "tagged",
        "Logs, reports progress, samples and elicits, each carrying the tag; answers with the tag and both replies",
        string_args("tag"),
    ),
    tool("change_lists", "Adds the extra tool, resource and prompt, then announces all three lists changed"),
    tool("touch_resource", "Sends resources/updated for a uri if the session subscribed to it", string_args("uri")),
    tool("test_input_required_result_elicitation", "2026: asks the user's name, then greets"),
    tool("test_input_required_result_sampling", "2026: asks the client's LLM a question, then answers"),
    tool("test_input_required_result_list_roots", "2026: asks the client's roots, then lists them"),
    tool("test_input_required_result_request_state", "2026: asks a confirmation, with a signed requestState"),
    tool("test_input_required_result_multiple_inputs", "2026: asks elicitation, sampling and roots at once"),
    tool("test_input_required_result_multi_round", "2026: asks twice, the state evolving between rounds"),
    tool("test_input_required_result_tampered_state", "2026: refuses a requestState it did not sign"),
    tool("test_streaming_elicitation", "2026: asks the user through an input-required result, never a request"),
    tool("test_missing_capability", "2026: needs the client's sampling capability"),
    tool("test_input_required_result_capabilities", "2026: asks only what the client's capabilities allow"),
    tool("test_logging_tool", "Sends an info log notification, if the request asked for logs"),
    tool(
        "test_param_headers",
        "2026: region, priority and verbose travel in Mcp-Param-* headers too; answers with the arguments it got",
        {
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "priority": {"type": "integer", "x-mcp-header": "Priority"},
                "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
                "query": {"type": "string"},
            },
            "required": ["region"],
        },
    ),
]
EXTRA_TOOL = tool("extra_tool", "Only listed after change_lists")

STATIC_TEXT = "This is the content of the static text resource."
RESOURCES: list[types.Resource] = [
    types.Resource(
        uri="test://static-text", name="static-text", description="A static text resource", mime_type="text/plain"
    ),
    types.Resource(
        uri="test://static-binary", name="static-binary", description="A static PNG resource", mime_type="image/png"
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        description="A resource clients can subscribe to",
        mime_type="text/plain",
    ),
]
EXTRA_RESOURCE = types.Resource(
    uri="test://extra", name="extra", description="Only listed after change_lists", mime_type="text/plain"
)
TEMPLATES = [
    types.ResourceTemplate(
        uri_template="test://template/{id}/data",
        name="template-data",
        description="JSON data for an id",
        mime_type="application/json",
    )
]

PROMPTS: list[types.Prompt] = [
    types.Prompt(name="test_input_required_result_prompt", description="2026: asks the user for context first"),
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two required arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First test argument", required=True),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds a resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI to embed", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]
EXTRA_PROMPT = types.Prompt(name="extra_prompt", description="Only listed after change_lists")

COMPLETIONS = {"arg1": ["paris", "park", "party"], "arg2": ["world", "wombat"]}


async def log(ctx: ServerRequestContext[Any], level: types.LoggingLevel, message: str) -> None:
    """Send a log notification tied to the current request, honouring the session's logging/setLevel."""
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(STATE.log_level):
        return
    await ctx.session.send_log_message(level, message, logger="stdio_server", related_request_id=ctx.request_id)


async def elicit(ctx: ServerRequestContext[Any], message: str, schema: dict[str, Any]) -> types.CallToolResult:
    if not ctx.session.check_client_capability(types.ClientCapabilities(elicitation=types.ElicitationCapability())):
        return error_result("The client does not support elicitation")
    answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return types.CallToolResult(
        content=[text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}")]
    )


STATE_KEY = os.environ.get("STDIO_SERVER_STATE_KEY", "").encode() or os.urandom(32)


def sign_state(value: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
    return body + "." + hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()


def open_state(state: str | None) -> dict[str, Any]:
    """The value a requestState carries; -32602 for one this server's key did not sign."""
    body, _, mac = (state or "").partition(".")
    if not hmac.compare_digest(mac, hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()):
        raise MCPError(types.INVALID_PARAMS, "Invalid params: requestState failed its integrity check")
    value = json.loads(base64.urlsafe_b64decode(body))
    assert isinstance(value, dict)
    return value


def elicitation(message: str, field_name: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field_name: {"type": kind}}, "required": [field_name]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def sampling(question: str, max_tokens: int) -> dict[str, Any]:
    message = {"role": "user", "content": {"type": "text", "text": question}}
    return {"method": "sampling/createMessage", "params": {"messages": [message], "maxTokens": max_tokens}}


ROOTS_REQUEST = {"method": "roots/list", "params": {}}


def input_required(requests: dict[str, Any], state: dict[str, Any] | None = None) -> types.InputRequiredResult:
    result: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        result["requestState"] = sign_state(state)
    return types.InputRequiredResult.model_validate(result)


def answered(responses: dict[str, Any], key: str, field_name: str) -> Any:
    """The field of an accepted elicitation answer, or None when the client has not given it."""
    answer = responses.get(key)
    content = answer.get("content") if isinstance(answer, dict) else getattr(answer, "content", None)
    if isinstance(content, dict):
        return content.get(field_name)
    return None


def sampled_text(responses: dict[str, Any], key: str) -> str | None:
    answer = responses.get(key)
    if answer is None:
        return None
    data = answer if isinstance(answer, dict) else answer.model_dump(mode="json", by_alias=True)
    content = data.get("content")
    return content.get("text") if isinstance(content, dict) else None


def roots_of(responses: dict[str, Any], key: str) -> list[str] | None:
    answer = responses.get(key)
    if answer is None:
        return None
    data = answer if isinstance(answer, dict) else answer.model_dump(mode="json", by_alias=True)
    roots = data.get("roots")
    return [str(r.get("uri")) for r in roots if isinstance(r, dict)] if isinstance(roots, list) else None


def input_required_tool(
    ctx: ServerRequestContext[Any], name: str, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    """The 2026 multi-round-trip fixtures: ask with an input-required result, complete on the retry."""
    responses: dict[str, Any] = dict(params.input_responses or {})
    if name in ("test_input_required_result_elicitation", "test_streaming_elicitation"):
        user = answered(responses, "user_name", "name")
        if not isinstance(user, str):
            return input_required({"user_name": elicitation("What is your name?", "name")})
        return types.CallToolResult(content=[text(f"Hello, {user}!")])
    if name == "test_input_required_result_sampling":
        reply = sampled_text(responses, "capital_question")
        if reply is None:
            return input_required({"capital_question": sampling("What is the capital of France?", 100)})
        return types.CallToolResult(content=[text(f"The model said: {reply}")])
    if name == "test_input_required_result_list_roots":
        roots = roots_of(responses, "client_roots")
        if roots is None:
            return input_required({"client_roots": ROOTS_REQUEST})
        return types.CallToolResult(content=[text(f"Roots: {', '.join(roots)}")])
    if name in ("test_input_required_result_request_state", "test_input_required_result_tampered_state"):
        if params.request_state is None or "confirm" not in responses:
            return input_required({"confirm": elicitation("Please confirm", "ok", "boolean")}, {"tool": name})
        if open_state(params.request_state).get("tool") != name:
            raise MCPError(types.INVALID_PARAMS, "Invalid params: requestState belongs to another tool")
        return types.CallToolResult(content=[text(f"state-ok: confirmed={answered(responses, 'confirm', 'ok')}")])
    if name == "test_input_required_result_multiple_inputs":
        keys = ("user_name", "greeting", "client_roots")
        if params.request_state is None or not all(key in responses for key in keys):
            requests = {
                "user_name": elicitation("What is your name?", "name"),
                "greeting": sampling("Generate a greeting", 50),
                "client_roots": ROOTS_REQUEST,
            }
            return input_required(requests, {"round": 1})
        open_state(params.request_state)
        user = answered(responses, "user_name", "name")
        return types.CallToolResult(
            content=[text(f"All inputs received: {user}, {sampled_text(responses, 'greeting')}")]
        )
    if name == "test_input_required_result_capabilities":
        if responses:
            return types.CallToolResult(content=[text(f"Received: {', '.join(sorted(responses))}")])
        wanted: dict[str, Any] = {}
        if ctx.session.check_client_capability(types.ClientCapabilities(sampling=types.SamplingCapability())):
            wanted["question"] = sampling("Say hello", 20)
        if ctx.session.check_client_capability(types.ClientCapabilities(elicitation=types.ElicitationCapability())):
            wanted["user_name"] = elicitation("What is your name?", "name")
        if not wanted:
            return types.CallToolResult(content=[text("The client declared neither sampling nor elicitation")])
        return input_required(wanted)
    if name == "test_input_required_result_multi_round":
        state = open_state(params.request_state) if params.request_state is not None else {}
        if state.get("round") == 2 and "step2" in responses:
            color = answered(responses, "step2", "color")
            return types.CallToolResult(content=[text(f"Done: {state.get('name')} likes {color}")])
        if state.get("round") == 1 and "step1" in responses:
            user = answered(responses, "step1", "name")
            step2 = elicitation("Step 2: What is your favorite color?", "color")
            return input_required({"step2": step2}, {"round": 2, "name": user})
        return input_required({"step1": elicitation("Step 1: What is your name?", "name")}, {"round": 1})
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[text(message)], is_error=True)


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    args = params.arguments or {}
    name = params.name
    if name.startswith("test_input_required_result") or name == "test_streaming_elicitation":
        return input_required_tool(ctx, name, params)
    if name == "test_missing_capability":
        if not ctx.session.check_client_capability(types.ClientCapabilities(sampling=types.SamplingCapability())):
            raise MCPError(
                -32021, "Missing required client capability: sampling", {"requiredCapabilities": {"sampling": {}}}
            )
        return types.CallToolResult(content=[text("the client declared sampling")])
    if name == "test_logging_tool":
        await log(ctx, "info", "test_logging_tool ran")
        return types.CallToolResult(content=[text("logged")])
    if name == "test_simple_text":
        return types.CallToolResult(content=[text("This is a simple text response for testing.")])
    if name == "test_param_headers":
        return types.CallToolResult(content=[text(json.dumps(args, sort_keys=True))])
    if name == "test_image_content":
        return types.CallToolResult(
            content=[types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")]
        )
    if name == "test_audio_content":
        return types.CallToolResult(content=[types.AudioContent(type="audio", data=SILENT_WAV, mime_type="audio/wav")])
    if name == "test_embedded_resource":
        resource = types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])
    if name == "test_multiple_content_types":
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return types.CallToolResult(
            content=[
                text("Multiple content types test:"),
                types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png"),
                types.EmbeddedResource(type="resource", resource=resource),
            ]
        )
    if name == "test_tool_with_logging":
        await log(ctx, "info", "Tool execution started")
        await anyio.sleep(0.05)
        await log(ctx, "info", "Tool processing data")
        await anyio.sleep(0.05)
        await log(ctx, "info", "Tool execution completed")
        return types.CallToolResult(content=[text("Tool with logging executed successfully")])
    if name == "test_error_handling":
        return error_result("This tool intentionally returns an error for testing")
    if name == "test_tool_with_progress":
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await anyio.sleep(0.05)
            # A no-op when the request carried no progressToken.
            await ctx.session.report_progress(progress, 100, f"step {step + 1} of 3")
        return types.CallToolResult(content=[text("Tool with progress executed successfully")])
    if name == "test_sampling":
        if not ctx.session.check_client_capability(types.ClientCapabilities(sampling=types.SamplingCapability())):
            return error_result("The client does not support sampling")
        reply = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=text(str(args.get("prompt", ""))))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        answer = reply.content.text if isinstance(reply.content, types.TextContent) else reply.content.type
        return types.CallToolResult(content=[text(f"LLM response: {answer}")])
    if name == "test_elicitation":
        return await elicit(
            ctx,
            str(args.get("message", "")),
            {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            },
        )
    if name == "test_elicitation_sep1034_defaults":
        return await elicit(
            ctx,
            "Please review the defaults",
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active",
                    },
                    "verified": {"type": "boolean", "description": "Verification status", "default": True},
                },
                "required": [],
            },
        )
    if name == "test_elicitation_sep1330_enums":
        return await elicit(
            ctx,
            "Please pick options",
            {
                "type": "object",
                "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {
                        "type": "string",
                        "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"},
                        ],
                    },
                    "legacyEnum": {
                        "type": "string",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"],
                    },
                    "untitledMulti": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    },
                    "titledMulti": {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                {"const": "value1", "title": "First Choice"},
                                {"const": "value2", "title": "Second Choice"},
                                {"const": "value3", "title": "Third Choice"},
                            ]
                        },
                    },
                },
                "required": [],
            },
        )
    if name == "json_schema_2020_12_tool":
        return types.CallToolResult(content=[text(f"Received: {json.dumps(args, sort_keys=True)}")])
    if name == "test_reconnection":
        # A stdio server cannot close the client's HTTP stream itself; answering after a pause gives a
        # gateway that polls (closes POST streams early) the window to do so.
        await anyio.sleep(0.5)
        return types.CallToolResult(content=[text("Reconnection test completed successfully")])
    if name == "echo":
        return types.CallToolResult(content=[text(str(args.get("text", "")))])
    if name == "slow":
        ms = args.get("ms", 0)
        if not isinstance(ms, int) or ms < 0:
            return error_result("ms must be a non-negative integer")
        await anyio.sleep(ms / 1000)
        return types.CallToolResult(content=[text(f"slept {ms} ms")])
    if name == "crash":
        code = args.get("code", 3)
        sys.stderr.write(f"stdio_server: crashing on request with exit code {code}\n")
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 3)
    if name == "whoami":
        return types.CallToolResult(content=[text(str(os.getpid()))])
    if name == "tagged":
        # Every message this call causes names its tag, so an isolation test can tell where each one landed.
        tag = str(args.get("tag", ""))
        await ctx.session.send_log_message(
            "warning", f"{tag} log", logger="stdio_server", related_request_id=ctx.request_id
        )
        await ctx.session.report_progress(1, 2, f"{tag} progress")
        reply = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=text(f"{tag} sample"))],
            max_tokens=10,
            related_request_id=ctx.request_id,
        )
        sampled = reply.content.text if isinstance(reply.content, types.TextContent) else ""
        answer = await ctx.session.elicit_form(
            f"{tag} elicit",
            {"type": "object", "properties": {"tag": {"type": "string"}}},
            related_request_id=ctx.request_id,
        )
        await ctx.session.report_progress(2, 2, f"{tag} progress")
        elicited = (answer.content or {}).get("tag")
        return types.CallToolResult(content=[text(f"{tag} done: sampled={sampled} elicited={elicited}")])
    if name == "change_lists":
        STATE.extras = True
        await ctx.session.send_tool_list_changed()
        await ctx.session.send_resource_list_changed()
        await ctx.session.send_prompt_list_changed()
        return types.CallToolResult(content=[text("tools, resources and prompts changed")])
    if name == "touch_resource":
        uri = str(args.get("uri", ""))
        if uri not in STATE.subscriptions:
            return types.CallToolResult(content=[text(f"not subscribed: {uri}")])
        await ctx.session.send_resource_updated(uri)
        return types.CallToolResult(content=[text(f"updated: {uri}")])
    if name == "extra_tool" and STATE.extras:
        return types.CallToolResult(content=[text("extra tool called")])
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[*TOOLS, EXTRA_TOOL] if STATE.extras else TOOLS)


async def list_resources(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[*RESOURCES, EXTRA_RESOURCE] if STATE.extras else RESOURCES)


async def list_resource_templates(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)


async def read_resource(
    ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = str(params.uri)
    contents: types.TextResourceContents | types.BlobResourceContents
    if uri == "test://static-text":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text=STATIC_TEXT)
    elif uri == "test://static-binary":
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=RED_PIXEL_PNG)
    elif uri == "test://watched-resource":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content.")
    elif uri == "test://extra" and STATE.extras:
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Extra resource content.")
    elif uri.startswith("test://template/") and uri.endswith("/data") and len(uri) > len("test://template//data"):
        item = uri[len("test://template/") : -len("/data")]
        body = {"id": item, "templateTest": True, "data": f"Data for ID: {item}"}
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=json.dumps(body))
    else:
        # -32002 is the spec's "resource not found" code.
        raise MCPError(-32002, f"Resource not found: {uri}", {"uri": uri})
    return types.ReadResourceResult(contents=[contents])


async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
    STATE.subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    STATE.subscriptions.discard(str(params.uri))
    return types.EmptyResult()


async def list_prompts(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=[*PROMPTS, EXTRA_PROMPT] if STATE.extras else PROMPTS)


async def get_prompt(
    ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
) -> types.GetPromptResult | types.InputRequiredResult:
    args = params.arguments or {}
    if params.name == "test_input_required_result_prompt":
        context = answered(dict(params.input_responses or {}), "user_context", "context")
        if not isinstance(context, str):
            ask = elicitation("What context should the prompt use?", "context")
            return input_required({"user_context": ask})
        messages = [types.PromptMessage(role="user", content=text(f"Answer with this context: {context}"))]
    elif params.name == "test_simple_prompt":
        messages = [types.PromptMessage(role="user", content=text("This is a simple prompt for testing."))]
    elif params.name == "test_prompt_with_arguments":
        missing = [name for name in ("arg1", "arg2") if name not in args]
        if missing:
            raise MCPError(types.INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
        body = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
        messages = [types.PromptMessage(role="user", content=text(body))]
    elif params.name == "test_prompt_with_embedded_resource":
        if "resourceUri" not in args:
            raise MCPError(types.INVALID_PARAMS, "Missing required argument: resourceUri")
        resource = types.TextResourceContents(
            uri=args["resourceUri"], mime_type="text/plain", text="Embedded resource content for testing."
        )
        messages = [
            types.PromptMessage(role="user", content=types.EmbeddedResource(type="resource", resource=resource)),
            types.PromptMessage(role="user", content=text("Please process the embedded resource above.")),
        ]
    elif params.name == "test_prompt_with_image":
        messages = [
            types.PromptMessage(
                role="user", content=types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")
            ),
            types.PromptMessage(role="user", content=text("Please analyze the image above.")),
        ]
    elif params.name == "extra_prompt" and STATE.extras:
        messages = [types.PromptMessage(role="user", content=text("The extra prompt."))]
    else:
        raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
    return types.GetPromptResult(messages=messages)


async def complete(ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
    values: list[str] = []
    if isinstance(params.ref, types.PromptReference) and params.ref.name == "test_prompt_with_arguments":
        prefix = params.argument.value
        values = [value for value in COMPLETIONS.get(params.argument.name, []) if value.startswith(prefix)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def set_logging_level(ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
    STATE.log_level = params.level
    return types.EmptyResult()


def build_server() -> Server[Any]:
    return Server(
        "cnpg-mcp-test-server",
        version="1.0.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_logging_level,
    )


async def serve() -> None:
    server = build_server()
    options = server.create_initialization_options(
        NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
    )
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


def main() -> None:
    anyio.run(serve)


if __name__ == "__main__":
    main()
