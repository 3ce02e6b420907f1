"""``popsteer serve``: a serving bundle behind a FastAPI app on Ray Serve, on 127.0.0.1 by default.

    POST /recommend   one user (user_id | history | vector) with k, alpha, alpha_unpop, num_neurons, variant
    GET  /health      the replica's pid and id, the bundle's dataset, model, index and steering defaults
    GET  /neurons     the analysed neurons: id, Cohen's d, label ("" where unlabelled), top |d| first

A bad request is a 422 whose ``detail`` names the field (pydantic's, or the engine's ``RequestError``).
Replicas (``--replicas``) are Ray actors restarted by Serve's controller when one dies; a request in flight
on a dying replica comes back as a 503 with a JSON ``error`` saying so, the others go to live replicas.
Ray: $RAY_ADDRESS's cluster when set (replicas read the bundle folder, so it must be on storage every
node sees), else a local one started here.
"""

import logging
import os
import time
from pathlib import Path

# Ray reads these at import: every address of a local Ray on loopback, and no token auth (as the test
# cluster's processes, tests/services.py; a token-auth local cluster left Serve's proxy never ready here)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from fastapi import FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from ray import serve  # noqa: E402

from popsteer.serve.schemas import RecommendRequest, RequestError

log = logging.getLogger(__name__)

SLOW_HOST_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30"}
"""Serve's proxy gets 5 s to start by default; on a loaded 2-core host its imports take longer, and
Serve then kills and restarts it forever."""

PROXY_WAIT_S = 240.0
"""How long past Serve's own 60 s to wait for its HTTP proxy."""

api = FastAPI(title="PopSteer", description="Popularity-steered recommendations (docs/METHOD.md, serving)")
LOCAL_ORIGINS = r"^(null|https?://(127\.0\.0\.1|localhost)(:[0-9]+)?)$"
"""Pages allowed to call the API from a browser (CORS): the neuron browser opened from disk (origin "null") or
served from this machine; no other site's page can read the answers."""
api.add_middleware(CORSMiddleware, allow_origin_regex=LOCAL_ORIGINS, allow_methods=["GET", "POST"],
                   allow_headers=["content-type"])

REPLICA_DIED = ("the replica answering this request died before it answered ({why}); the request was not "
                "served: send it again (the other replicas, and a replacement, take it)")


@serve.deployment(health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5)
class Recommender:
    """One model replica: the bundle loaded once, requests answered by ``ServingEngine``. Returns
    ``(status, body)`` so that a refused field crosses the actor boundary as data.

    Requests that arrive together are answered together (``serve.batch``: up to ``batch`` of them, the
    first waiting at most 2 ms for company): one index search over their stacked queries, so
    that exact scoring reads the item table once per batch rather than once per request."""

    def __init__(self, bundle: str, batch: int = 8) -> None:
        from popsteer.serve.engine import ServingEngine

        self.engine = ServingEngine(bundle)
        self._answer.set_max_batch_size(batch)

    async def recommend(self, request: dict) -> tuple[int, dict]:
        return await self._answer(request)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _answer(self, requests: list[dict]) -> list[tuple[int, dict]]:
        answers = self.engine.recommend_many([RecommendRequest.model_validate(r) for r in requests])
        return [(422, {"detail": a.detail()}) if isinstance(a, RequestError) else (200, a) for a in answers]

    def health(self) -> dict:
        replica = serve.get_replica_context().replica_id
        return {**self.engine.health(), "pid": os.getpid(), "replica": str(replica.unique_id)}

    def neurons(self) -> list[dict]:
        return self.engine.neuron_table()


@serve.deployment(graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Gateway:
    """The HTTP ingress (no model): parses and checks requests, forwards them to the ``Recommender``
    replicas, and turns a replica that dies under a request into a clear 503."""

    def __init__(self, recommender) -> None:
        self.recommender = recommender  # DeploymentHandle

    async def _call(self, method: str, *args):
        from ray.exceptions import ActorUnavailableError, RayActorError

        try:
            return await getattr(self.recommender, method).remote(*args)
        except (RayActorError, ActorUnavailableError) as exc:
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            log.warning("a replica died under a %s request: %s", method, why)
            return JSONResponse(status_code=503, content={"error": REPLICA_DIED.format(why=type(exc).__name__),
                                                          "cause": why})

    @api.get("/health")
    async def health(self):
        return await self._call("health")

    @api.get("/neurons")
    async def neurons(self):
        out = await self._call("neurons")
        return out if isinstance(out, JSONResponse) else {"neurons": out}

    @api.post("/recommend")
    async def recommend(self, req: RecommendRequest):
        out = await self._call("recommend", req.model_dump())
        if isinstance(out, JSONResponse):
            return out
        status, body = out
        return body if status == 200 else JSONResponse(status_code=status, content=body)


def connect_ray(address: str | None = None) -> None:
    """Connect to $RAY_ADDRESS's cluster (or ``address``), else start a local Ray; loopback only."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for key, value in SLOW_HOST_ENV.items():  # a local Ray's processes inherit them
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": dict(SLOW_HOST_ENV)})
    else:
        # "local": a new Ray here, never a cluster another process left recorded in /tmp/ray
        ray.init(address="local", include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")


def start_app(bundle: str | Path, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
              replica_cpus: float = 1.0, name: str = "popsteer", batch: int = 8, max_ongoing: int = 32) -> str:
    """Deploy the bundle's app on Ray Serve (Ray connected first: ``connect_ray``); returns its base URL."""
    from popsteer.serve.engine import check_bundle

    check_bundle(bundle)
    start_serve(host, port)
    model = Recommender.options(num_replicas=replicas, max_ongoing_requests=max_ongoing,
                                ray_actor_options={"num_cpus": replica_cpus}).bind(str(Path(bundle).resolve()), batch)
    # the ingress passes up to max_ongoing requests at once (Serve's default, 5, would cap the replicas' batches)
    app = Gateway.options(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=max_ongoing * replicas).bind(model)
    serve.run(app, name=name, route_prefix="/", blocking=False)
    url = f"http://{host}:{port}"
    log.info("serving %s at %s with %d replica(s)", bundle, url, replicas)
    return url


def start_serve(host: str, port: int, wait_s: float = PROXY_WAIT_S) -> None:
    """``serve.start`` on host:port. Serve gives its HTTP proxy 60 s (a constant) to come up; on a loaded
    host it can take longer, so a timeout there is followed by waiting for the proxy up to ``wait_s`` more."""
    from popsteer.errors import PopSteerError

    try:
        serve.start(http_options={"host": host, "port": port})
        return
    except TimeoutError:
        log.warning("Serve's HTTP proxy is slow to start; waiting up to %.0f s more", wait_s)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proxies = serve.status().proxies
        if proxies and all(str(getattr(s, "value", s)) == "HEALTHY" for s in proxies.values()):
            return
        time.sleep(1)
    raise PopSteerError(f"Ray Serve's HTTP proxy on {host}:{port} did not start within {60 + wait_s:.0f} s "
                        "(is the port taken?)")


def serve_forever(url: str) -> None:
    """Block until interrupted, then shut Serve down."""
    from popsteer.util.logs import begin_work

    begin_work()  # a long step: the held log lines go out now
    log.info("serving at %s (POST /recommend, GET /health, GET /neurons); Ctrl-C stops", url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
