"""What a route change costs the reconciler's per-proxy pass, in process (no xDS).

Builds the benchmark mesh (`mesh.py`: N proxies x S Services; `--scoped`: a Sidecar per
Service, else none), translates every proxy, applies the bench's HTTPRoute, then times
the index and mesh rebuild and (with `--profile`,
cProfiles) what `controlplane/reconcile.py` does for each proxy: compare its inputs,
then translate it again or keep its last config with the new endpoints and virtual
hosts, and set its snapshot in the cache. What a route change costs beyond that in
`run.py` is the xDS side: waking each stream, its response and its ACK.

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python -m bench.controlplane.routepass [--no-vhds]
        [--scoped | --policies] [--n 1000] [--s 1000]

`--scoped` adds run.py's Sidecars, `--policies` its AuthorizationPolicies (the scopes
inferred from them); a scoped proxy whose scope misses the changed Service is then
skipped unread, as the reconciler's `_untouched` does.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from bench.controlplane import mesh as bm

from gossamer.index import build_index
from gossamer.model import parse_document
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.mesh import only_services_changed
from gossamer.translate.proxy import proxy_inputs, with_endpoints
from gossamer.xds.cache import SnapshotCache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--s", type=int, default=1000)
    p.add_argument("--no-vhds", action="store_true")
    p.add_argument("--scoped", action="store_true", help="a Sidecar per Service (run.py's)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--policies", action="store_true",
                   help="an ALLOW AuthorizationPolicy per Service (run.py's)")
    args = p.parse_args()
    lay = bm.Layout(args.n, args.s, vhds=not args.no_vhds)
    docs = [bm.service_doc(i) for i in range(lay.s)]
    if args.scoped:
        docs += [bm.sidecar_doc(i, lay.s) for i in range(lay.s)]
    if args.policies:
        docs += [bm.mesh_doc(True, False), *(bm.allow_doc(i, lay.s) for i in range(lay.s))]
    docs += [lay.workload_doc(j) for j in range(lay.workloads)]
    res = [parse_document(d).with_revision(i + 1) for i, d in enumerate(docs)]
    index = build_index(res, len(res))
    before = translate_mesh(index)
    nodes = [lay.agent(j).node("/tmp/gossamer-routepass.log") for j in range(lay.n)]
    configs = [translate_proxy(before, n) for n in nodes]
    cache = SnapshotCache()
    for node, config in zip(nodes, configs, strict=True):
        cache.set(node.node_id, config.snapshot)
    res.append(parse_document(bm.route_doc(5, lay.s, 60)).with_revision(len(res) + 1))
    t0 = time.perf_counter()
    after = translate_mesh(build_index(res, len(res), index), previous=before)
    t1 = time.perf_counter()
    profile = cProfile.Profile()
    if args.profile:
        profile.enable()
    translated = skipped = 0
    quiet = only_services_changed(before, after)
    for node, config in zip(nodes, configs, strict=True):
        if quiet and config.scope is not None \
                and config.scope.isdisjoint(after.changed_services):
            skipped += 1
            continue
        if config.inputs != proxy_inputs(after, node):
            config = translate_proxy(after, node, config)
            translated += 1
        else:
            config = with_endpoints(after, node, config)
        cache.set(node.node_id, config.snapshot)
    t2 = time.perf_counter()
    profile.disable()
    print(f"index and mesh {t1 - t0:.3f} s; per-proxy pass {t2 - t1:.3f} s "
          f"({translated} of {lay.n} proxies translated again, {skipped} skipped)")
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
