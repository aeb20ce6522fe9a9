"""``modelhub chat -m A [-m B] [PROMPT]``: talk to one or two models through the chat gateway (gRPC).

With a prompt it prints the answers and exits. Without one it is interactive: both models stream side by
side, and these commands steer the conversation:

  /switch MODEL [MODEL]  answer with other models from now on (the conversation keeps its history)
  /pick 1|2              continue from the first or the second model's last answer
  /image PATH            attach an image to the next message
  /action NAME [1|2]     run one of the model's actions on its last answer (the first model's by default)
  /history               show the conversation along the selected answers
  /new                   start a new conversation
  /quit                  leave (so does Ctrl-D)
"""

from __future__ import annotations

import mimetypes
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_cli import render
from modelhub_cli.endpoints import EndpointsError, load_endpoints
from modelhub_cli.errors import CliError

GATEWAY_KEY = "MODELHUB_GATEWAY_GRPC"
TOKEN_KEY = "MODELHUB_TOKEN"
DEFAULT_MODEL_KEY = "MODELHUB_DEFAULT_MODEL"
#: The embedded instruction-tuned model `make up` stores, used when neither -m nor $MODELHUB_DEFAULT_MODEL is set.
FALLBACK_MODEL = "smollm2:135m"
_TIMEOUT_SECONDS = 600.0


@dataclass
class AnswerView:
    model_id: str
    message_id: str = ""
    text: str = ""
    status: str = "…"
    notes: list[str] = field(default_factory=list)

    def panel(self) -> Panel:
        body = Text(self.text or "")
        for note in self.notes:
            body.append(f"\n{note}", style="yellow")
        style = {"done": "green", "error": "red"}.get(self.status, "cyan")
        return Panel(body, title=Text(self.model_id), subtitle=self.status, border_style=style, expand=True)


@dataclass
class ChatSession:
    """One conversation with the gateway: who answers, what was said last, what to attach next."""

    stub: chat_pb2_grpc.ChatServiceStub
    metadata: list[tuple[str, str]]
    models: list[str]
    mode: chat_pb2.ContextMode
    conversation_id: str = ""
    last_answers: list[AnswerView] = field(default_factory=list)
    pending_images: list[chat_pb2.Image] = field(default_factory=list)

    def turn(self, text: str) -> Iterator[tuple[chat_pb2.ChatEvent, list[AnswerView]]]:
        request = chat_pb2.ChatRequest(
            conversation_id=self.conversation_id,
            models=self.models,
            message=chat_pb2.UserMessage(text=text, images=self.pending_images),
            context_mode=self.mode,
        )
        self.pending_images = []
        views = {m: AnswerView(m) for m in self.models}
        calls: dict[str, str] = {}
        self.last_answers = list(views.values())
        for event in self.stub.Chat(request, metadata=self.metadata, timeout=_TIMEOUT_SECONDS):
            kind = event.WhichOneof("event")
            view = views.get(event.model_id)
            if kind == "turn_started":
                self.conversation_id = event.turn_started.conversation_id
            elif view is None:
                pass
            elif kind == "answer_started":
                view.message_id, view.status = event.answer_started.message_id, "streaming"
            elif kind == "delta":
                view.text += event.delta.text
            elif kind == "warning":
                view.notes.append(f"⚠ {event.warning.message}")
            elif kind == "citations":
                names = ", ".join(dict.fromkeys(c.file_name for c in event.citations.citations))
                view.notes.append(f"sources: {names}")
            elif kind == "tool_call":
                call = event.tool_call
                calls[call.id] = call.tool
                view.notes.append(f"→ {call.tool}({_short(call.arguments)}) on {call.server_id}")
            elif kind == "tool_result":
                result = event.tool_result
                name = calls.get(result.id, "tool")
                mark = "←" if result.ok else f"✗ {result.error_code}:"
                view.notes.append(f"{mark} {name}: {_short(result.content)} ({result.duration_seconds * 1000:.0f} ms)")
            elif kind == "answer_done":
                done = event.answer_done
                view.status = f"done · {done.usage.completion_tokens} tokens · {done.total_seconds:.1f} s"
            elif kind == "answer_error":
                view.status = "error"
                view.notes.append(f"✗ {event.answer_error.message}")
            yield event, self.last_answers

    def pick(self, index: int) -> None:
        if not self.last_answers:
            raise CliError("there is no answer to pick yet")
        if not 1 <= index <= len(self.last_answers):
            raise CliError(f"/pick takes 1 to {len(self.last_answers)}")
        chosen = self.last_answers[index - 1]
        self.stub.SelectAnswer(
            chat_pb2.SelectAnswerRequest(conversation_id=self.conversation_id, message_id=chosen.message_id),
            metadata=self.metadata,
        )

    def action(self, action_id: str, index: int = 1) -> chat_pb2.Message:
        if not self.last_answers:
            raise CliError("there is no answer to run an action on yet")
        if not 1 <= index <= len(self.last_answers):
            raise CliError(f"/action takes an answer number from 1 to {len(self.last_answers)}")
        answer = self.last_answers[index - 1]
        request = chat_pb2.RunActionRequest(
            conversation_id=self.conversation_id, message_id=answer.message_id, action_id=action_id
        )
        result: chat_pb2.Message = self.stub.RunAction(request, metadata=self.metadata, timeout=_TIMEOUT_SECONDS)
        return result

    def history(self) -> list[chat_pb2.Message]:
        if not self.conversation_id:
            return []
        conversation = self.stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=self.conversation_id), metadata=self.metadata
        )
        by_id = {m.id: m for m in conversation.messages}
        path: list[chat_pb2.Message] = []
        current = conversation.current_message_id
        while current and current in by_id:
            path.append(by_id[current])
            current = by_id[current].parent_id
        return list(reversed(path))


def _short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def load_image(path: Path) -> chat_pb2.Image:
    if not path.is_file():
        raise CliError(f"{path} is not a file")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not mime.startswith("image/"):
        raise CliError(f"{path} does not look like an image ({mime})")
    return chat_pb2.Image(data=path.read_bytes(), mime_type=mime)


def _grpc_error(exc: grpc.RpcError) -> CliError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    hints = {
        grpc.StatusCode.UNAVAILABLE: "is the stack running? `make up` starts it, `modelhub status` checks it",
        grpc.StatusCode.UNAUTHENTICATED: f"set {TOKEN_KEY} or pass --token",
        grpc.StatusCode.NOT_FOUND: "`modelhub models list` shows the models you can use",
    }
    name = code.name if code is not None else "error"
    return CliError(f"{details} ({name})", hint=hints.get(code) if code is not None else None)


def _show_turn(console: Console, session: ChatSession, text: str) -> None:
    views: list[AnswerView] = []
    if console.is_terminal:
        with Live(console=console, refresh_per_second=12, transient=False) as live:
            for _, views in session.turn(text):
                live.update(Columns([v.panel() for v in views], equal=True, expand=True))
        return
    for _ in session.turn(text):
        pass
    console.print(Group(*(v.panel() for v in session.last_answers)))


def _show_history(console: Console, session: ChatSession) -> None:
    messages = session.history()
    if not messages:
        console.print("(nothing said yet)")
    for message in messages:
        who = "you" if message.role == "user" else message.model_id
        line = Text(f"{who}: ", style="bold")
        line.append(message.content)
        console.print(line)


def _interactive(console: Console, session: ChatSession) -> None:
    console.print(Text(f"chatting with {', '.join(session.models)} — /help for commands, Ctrl-D to leave"))
    while True:
        try:
            line = console.input("[bold]you> [/bold]").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        try:
            if line.startswith("/"):
                command, *args = shlex.split(line)
                if command in ("/quit", "/exit"):
                    return
                if command == "/help":
                    console.print(Text((__doc__ or "").split("\n\n", 2)[-1]))
                elif command == "/switch":
                    if not 1 <= len(args) <= 2:
                        raise CliError("/switch takes one or two model ids")
                    session.models = args
                    console.print(Text(f"now answering: {', '.join(args)}"))
                elif command == "/pick":
                    if len(args) != 1 or not args[0].isdigit():
                        raise CliError("/pick takes 1 or 2")
                    session.pick(int(args[0]))
                    console.print(Text(f"continuing from {session.last_answers[int(args[0]) - 1].model_id}'s answer"))
                elif command == "/image":
                    if len(args) != 1:
                        raise CliError("/image takes one path")
                    session.pending_images.append(load_image(Path(args[0]).expanduser()))
                    console.print(Text(f"attached {args[0]} to your next message"))
                elif command == "/action":
                    if not 1 <= len(args) <= 2 or (len(args) == 2 and not args[1].isdigit()):
                        raise CliError("/action takes an action id and, optionally, 1 or 2")
                    result = session.action(args[0], int(args[1]) if len(args) == 2 else 1)
                    style = "green" if result.status == "done" else "red"
                    console.print(Panel(Text(result.content), title=Text(f"action {args[0]}"), border_style=style))
                elif command == "/history":
                    _show_history(console, session)
                elif command == "/new":
                    session.conversation_id, session.last_answers = "", []
                    console.print("new conversation")
                else:
                    raise CliError(f"unknown command {command}; /help lists them")
                continue
            _show_turn(console, session, line)
        except CliError as exc:
            render.print_error(exc)
        except grpc.RpcError as exc:
            render.print_error(_grpc_error(exc))


def chat(
    prompt: Annotated[str | None, typer.Argument(help="ask this and exit (interactive without it)")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--model",
            help=f"a model id; give it twice for two models (default: ${DEFAULT_MODEL_KEY}, else {FALLBACK_MODEL})",
        ),
    ] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="attach an image to the prompt")] = None,
    conversation: Annotated[str | None, typer.Option("--conversation", help="continue this conversation")] = None,
    per_model: Annotated[
        bool, typer.Option("--per-model", help="each model sees its own earlier answers (default: the selected one)")
    ] = False,
    gateway: Annotated[
        str | None, typer.Option("--gateway", help=f"host:port of the gRPC gateway (default: ${GATEWAY_KEY})")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help=f"bearer token (default: ${TOKEN_KEY})")] = None,
    env_file: Annotated[Path | None, typer.Option("--env-file", help="endpoints file to read")] = None,
) -> None:
    """Chat with one or two models; two answer side by side."""
    try:
        _run(prompt, model or [], image or [], conversation, per_model, gateway, token, env_file)
    except CliError as exc:
        render.print_error(exc)
        raise typer.Exit(1) from None


def _run(
    prompt: str | None,
    models: list[str],
    images: list[Path],
    conversation: str | None,
    per_model: bool,
    gateway: str | None,
    token: str | None,
    env_file: Path | None,
) -> None:
    try:
        endpoints = load_endpoints(env_file)
    except EndpointsError as exc:
        raise CliError(str(exc)) from exc
    models = models or [endpoints.get(DEFAULT_MODEL_KEY) or FALLBACK_MODEL]
    if len(models) > 2:
        raise CliError("name one or two models with -m", hint='`modelhub chat -m smollm2:135m -m gemma3:270m "hello"`')
    target = gateway or endpoints.get(GATEWAY_KEY)
    if not target:
        raise CliError("no chat gateway is configured", hint=f"run `make up`, set {GATEWAY_KEY}, or pass --gateway")
    bearer = token or endpoints.get(TOKEN_KEY)
    if not bearer:
        raise CliError("no token is configured", hint=f"run `make up`, set {TOKEN_KEY}, or pass --token")
    console = render.stdout()
    with grpc.insecure_channel(target.removeprefix("http://")) as channel:
        session = ChatSession(
            stub=chat_pb2_grpc.ChatServiceStub(channel),  # type: ignore[no-untyped-call]
            metadata=[("authorization", f"Bearer {bearer}")],
            models=models,
            mode=chat_pb2.CONTEXT_MODE_PER_MODEL if per_model else chat_pb2.CONTEXT_MODE_SHARED,
            conversation_id=conversation or "",
            pending_images=[load_image(p) for p in images],
        )
        try:
            if prompt is None:
                _interactive(console, session)
                return
            _show_turn(console, session, prompt)
        except grpc.RpcError as exc:
            raise _grpc_error(exc) from None
        failed = [v for v in session.last_answers if v.status == "error"]
        console.print(Text(f"conversation {session.conversation_id}", style="dim"))
        if failed and len(failed) == len(session.last_answers):
            raise typer.Exit(1)
