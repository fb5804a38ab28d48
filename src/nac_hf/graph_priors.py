"""Graph priors for the signatures of a Neural Attentive Circuit.

Two tools shape the connectivity of the processor modules (the paper's graph priors; docs/architecture.md,
"Graph priors and the regulariser"):

* a **graph prior**: the signatures are fit at model creation so that the truncated signature kernel links exactly
  the module pairs of a target graph sampled from networkx (`build_prior_graph` + `fit_signatures`);
* a **graph-prior regulariser**: a training loss that keeps the learned link-probability matrix close to a target
  *graphon*, the expected adjacency of a random-graph family (`graphon` + `graphon_distance`), after the
  learned modules are matched to the graphon's nodes.

Everything here is a pure function of tensors and numbers (no config object, no module state). The file travels next
to the modeling code, so it imports only torch and the standard library at module level, and a machine with nothing
but torch and transformers loads a saved model and runs it. networkx (sampling a prior graph when a model is created
from its config) and scipy (matching nodes for the regulariser's loss, computed in training or when labels are
given) are imported inside the functions that use them, in `try` blocks: transformers' remote-code loader requires
every import outside such a block to be installed.
"""

from __future__ import annotations

import contextlib
import numbers

import torch


PRIOR_KINDS = ("complete", "planted-partition", "scale-free", "ring-of-cliques", "erdos-renyi", "watts-strogatz")
GRAPHON_KINDS = ("planted-partition", "scale-free", "watts-strogatz", "ring-of-cliques")
GRAPHON_DISTANCES = ("mse", "kl")

# Half-width of the band around the truncation that the fit keeps every pair out of: linked pairs end at a cosine
# distance <= truncation - 0.05, unlinked pairs at >= truncation + 0.05 (when the graph can be realised in the
# signature dimension). Distances live in [0, 2]; 0.05 is small enough that the graphs of the presets are realised
# exactly in their signature dimension, and large enough that a little drift of the signatures once training starts
# (or float noise between devices) does not flip a link.
DEFAULT_MARGIN = 0.05

# Probabilities are clamped to [eps, 1 - eps] inside the Bernoulli KL so that a learned probability of exactly 0 or 1
# (a truncated kernel, a self link) gives a finite loss and gradient.
_KL_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_groups(num_nodes: int, num_groups, minimum_group_size: int, kind: str) -> int:
    num_groups = _check_int("num_groups", num_groups, 1 if kind == "planted-partition" else 2)
    if num_nodes % num_groups != 0:
        raise ValueError(
            f"num_groups ({num_groups}) must divide num_nodes ({num_nodes}) for the {kind!r} graph; "
            f"use a number of groups that divides {num_nodes}"
        )
    if num_nodes // num_groups < minimum_group_size:
        raise ValueError(
            f"the {kind!r} graph needs groups of at least {minimum_group_size} nodes, but num_nodes={num_nodes} "
            f"split into num_groups={num_groups} gives {num_nodes // num_groups}; use fewer groups"
        )
    return num_groups


def _missing(what: str, package: str) -> ImportError:
    return ImportError(f"{what} needs {package}, which is not installed; install it with: pip install {package}")


def _check_kind(kind: str, allowed: tuple[str, ...], what: str) -> None:
    if kind not in allowed:
        raise ValueError(f"unknown {what} kind {kind!r}; choose one of {list(allowed)}")


def _check_adjacency(adjacency: torch.Tensor, name: str = "adjacency") -> torch.Tensor:
    if not isinstance(adjacency, torch.Tensor) or adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
        shape = tuple(adjacency.shape) if isinstance(adjacency, torch.Tensor) else type(adjacency).__name__
        raise ValueError(f"expected {name} as a square (n, n) tensor, got {shape}")
    adjacency = adjacency.detach().to("cpu")
    if adjacency.dtype != torch.bool:
        if not bool(((adjacency == 0) | (adjacency == 1)).all()):
            raise ValueError(f"expected {name} with entries 0/1 (or a bool tensor)")
        adjacency = adjacency != 0
    if not bool((adjacency == adjacency.T).all()):
        raise ValueError(f"expected a symmetric {name} (the module graph is undirected)")
    return adjacency


@contextlib.contextmanager
def _one_cpu_thread():
    """Run torch's CPU ops on one thread, then restore the setting. The signature fit is a thousand steps of small
    ops; handing each to a thread pool costs more than it saves, and many times more on a CPU shared with other work
    (measured on two cores for 256 modules: 0.6 s on one thread, 4-5 s on two when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_truncation(truncation) -> float:
    if isinstance(truncation, bool) or not isinstance(truncation, numbers.Real) or not 0.0 < truncation <= 2.0:
        raise ValueError(f"truncation is a cosine distance and must lie in (0, 2], got {truncation!r}")
    return float(truncation)


# ---------------------------------------------------------------------------------------------------------------------
# Graph priors
# ---------------------------------------------------------------------------------------------------------------------


def build_prior_graph(
    kind: str,
    num_nodes: int,
    *,
    num_groups: int = 8,
    p_in: float = 0.9,
    p_out: float = 0.01,
    edges_per_node: int = 4,
    edge_prob: float = 0.1,
    num_neighbors: int = 4,
    seed: int = 0,
):
    """Sample the target graph of a graph prior (a `networkx.Graph`), with nodes labelled `0 .. num_nodes - 1`.

    Args:
        kind: `"complete"`, `"planted-partition"` (`num_groups` groups of `num_nodes / num_groups` consecutive nodes,
            link probability `p_in` inside a group and `p_out` across), `"scale-free"` (Barabási–Albert, every new
            node brings `edges_per_node` edges), `"ring-of-cliques"` (`num_groups` cliques of
            `num_nodes / num_groups` nodes, consecutive cliques joined by one edge), `"erdos-renyi"` (link
            probability `edge_prob`) or `"watts-strogatz"` (ring lattice of `num_neighbors` neighbours, every edge
            rewired with probability `edge_prob`).
        num_nodes: number of nodes (the processor modules).
        seed: seed of the random generators; the same seed gives the same graph.

    Only the arguments of the chosen kind are checked and used.
    """
    try:
        import networkx as nx
    except ImportError as error:
        raise _missing("sampling a graph prior (a model created from its config)", "networkx") from error
    _check_kind(kind, PRIOR_KINDS, "graph prior")
    n = _check_int("num_nodes", num_nodes, 1)
    if kind == "complete":
        graph = nx.complete_graph(n)
    elif kind == "planted-partition":
        groups = _check_groups(n, num_groups, 1, kind)
        graph = nx.planted_partition_graph(
            groups, n // groups, _check_probability("p_in", p_in), _check_probability("p_out", p_out), seed=seed
        )
    elif kind == "scale-free":
        m = _check_int("edges_per_node", edges_per_node, 1)
        if m >= n:
            raise ValueError(f"edges_per_node ({m}) must be smaller than num_nodes ({n}) for the scale-free graph")
        graph = nx.barabasi_albert_graph(n, m, seed=seed)
    elif kind == "ring-of-cliques":
        groups = _check_groups(n, num_groups, 2, kind)
        graph = nx.ring_of_cliques(groups, n // groups)
    elif kind == "erdos-renyi":
        graph = nx.erdos_renyi_graph(n, _check_probability("edge_prob", edge_prob), seed=seed)
    else:  # watts-strogatz
        k = _check_int("num_neighbors", num_neighbors, 1)
        if k >= n:
            raise ValueError(f"num_neighbors ({k}) must be smaller than num_nodes ({n}) for the Watts-Strogatz graph")
        graph = nx.watts_strogatz_graph(n, k, _check_probability("edge_prob", edge_prob), seed=seed)
    # Generators add nodes in label order already; rebuilding the graph with nodes inserted as 0 .. n - 1 pins that
    # order down whatever the networkx version.
    ordered = nx.Graph()
    ordered.add_nodes_from(range(n))
    ordered.add_edges_from(graph.edges())
    return ordered


def graph_adjacency(graph) -> torch.Tensor:
    """(n, n) bool adjacency of a networkx graph with nodes `0 .. n - 1`, without self links."""
    n = graph.number_of_nodes()
    if sorted(graph.nodes()) != list(range(n)):
        raise ValueError("expected a graph with nodes labelled 0 .. n - 1 (as build_prior_graph makes them)")
    adjacency = torch.zeros(n, n, dtype=torch.bool)  # (n, n)
    edges = torch.tensor(list(graph.edges()), dtype=torch.long).reshape(-1, 2)  # (E, 2)
    adjacency[edges[:, 0], edges[:, 1]] = True
    if not graph.is_directed():
        adjacency[edges[:, 1], edges[:, 0]] = True
    adjacency.fill_diagonal_(False)
    return adjacency


def signature_distance(signatures: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine distance `1 - cos(s_u, s_v)` between the L2-normalised signatures (n, D); 0 on the diagonal up
    to float error, in [0, 2]."""
    unit = torch.nn.functional.normalize(signatures, dim=-1)  # (n, D)
    return 1.0 - unit @ unit.transpose(-1, -2)  # (n, n)


def edge_agreement(signatures: torch.Tensor, adjacency: torch.Tensor, truncation: float) -> float:
    """Fraction of module pairs `i < j` whose truncated-kernel link (`d_ij < truncation`) equals `adjacency[i, j]`."""
    adjacency = _check_adjacency(adjacency)
    n = adjacency.shape[0]
    if signatures.dim() != 2 or signatures.shape[0] != n:
        raise ValueError(f"expected signatures of shape ({n}, D) to match the adjacency, got {tuple(signatures.shape)}")
    if n < 2:
        return 1.0
    with torch.no_grad():
        linked = signature_distance(signatures.detach().to("cpu", torch.float32)) < truncation  # (n, n)
    rows, cols = torch.triu_indices(n, n, offset=1)
    return float((linked[rows, cols] == adjacency[rows, cols]).double().mean())


def fit_signatures(
    adjacency: torch.Tensor,
    signature_dim: int,
    truncation: float,
    *,
    steps: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
) -> torch.Tensor:
    """Signatures whose truncated kernel reproduces a graph.

    Starting from orthogonal signatures (drawn from a generator seeded with `seed`; the global RNG is untouched),
    Adam minimises the hinge loss, averaged over the pairs `i != j`,

        [d_ij - (truncation - margin)]_+   for linked pairs,
        [(truncation + margin) - d_ij]_+   for unlinked pairs,

    with `d_ij = 1 - cos(s_i, s_j)`; self pairs (always `d = 0`) are left out. Linked and unlinked pairs weigh the
    same (weighting the rarer linked pairs up was measured to converge more slowly). The fit stops early once every
    pair is outside the band, and otherwise returns the iterate with the fewest pairs on the wrong side of
    `truncation` (the latest one among equals). When `signature_dim` is too small to realise the graph, that is the
    best it found. It runs on one CPU thread, which is faster for these small ops and makes the result independent
    of `torch.set_num_threads`.

    Measured on two CPU cores: 8 modules in 8 dimensions, 300 steps: under 0.01 s (early stop) and 0.05 s for all
    300 steps; 256 modules in 64 dimensions, 1000 steps: 0.6 s.

    Args:
        adjacency: (n, n) symmetric bool or 0/1 tensor; the diagonal is ignored.
        signature_dim: size D of a signature.
        truncation: ε of the signature kernel, a cosine distance in (0, 2].
        steps: Adam steps at most; 0 returns the (normalised) orthogonal start.
        lr: Adam learning rate.
        seed: seed of the orthogonal start; the result is a deterministic function of the arguments.
        margin: half-width of the band around `truncation` kept free of pairs (see `DEFAULT_MARGIN`).

    Returns:
        (n, D) float32 signatures on the CPU, each of unit L2 norm (the kernel normalises them anyway).
    """
    adjacency = _check_adjacency(adjacency)
    signature_dim = _check_int("signature_dim", signature_dim, 1)
    truncation = _check_truncation(truncation)
    steps = _check_int("steps", steps, 0)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or margin < 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    n = adjacency.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    signatures = torch.empty(n, signature_dim, dtype=torch.float32, device="cpu")  # (n, D)
    torch.nn.init.orthogonal_(signatures, generator=generator)
    if n >= 2:
        with torch.enable_grad(), _one_cpu_thread():
            signatures = _fit_hinge(signatures, adjacency, truncation, margin, steps, lr)
    return torch.nn.functional.normalize(signatures, dim=-1)


def _fit_hinge(
    signatures: torch.Tensor, adjacency: torch.Tensor, truncation: float, margin: float, steps: int, lr: float
) -> torch.Tensor:
    """The Adam fit of `fit_signatures` from the start `signatures` (n, D): the iterate with the fewest pairs on the
    wrong side of `truncation` (the latest among equals), stopping early once every pair is outside the band."""
    n = adjacency.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device="cpu")  # (n, n)
    linked = adjacency & off_diagonal
    # +1 where the distance must go down (linked), -1 where it must go up (unlinked), 0 on the diagonal.
    direction = linked.float() - (~adjacency & off_diagonal).float()  # (n, n)
    bound = torch.where(linked, truncation - margin, truncation + margin).float()  # (n, n)
    num_pairs = n * (n - 1)
    signatures.requires_grad_(True)
    optimizer = torch.optim.Adam([signatures], lr=lr)
    best, best_wrong = None, None
    for step in range(steps + 1):
        distance = signature_distance(signatures)  # (n, n)
        violation = torch.relu(direction * (distance - bound))  # (n, n), 0 on the diagonal
        with torch.no_grad():
            wrong = int((((distance < truncation) != adjacency) & off_diagonal).sum())
            if best_wrong is None or wrong <= best_wrong:
                best_wrong, best = wrong, signatures.detach().clone()
            if step == steps or not bool(violation.any()):
                break
        loss = violation.sum() / num_pairs
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return best


# ---------------------------------------------------------------------------------------------------------------------
# Graphons and the graph-prior regulariser
# ---------------------------------------------------------------------------------------------------------------------


def _capped_proportional(weights: torch.Tensor, total: int) -> torch.Tensor:
    """Probabilities proportional to `weights`, summing to `total`, none above 1 (the excess of a capped entry goes
    to the others in proportion): how likely each node is to be among `total` distinct draws, to first order."""
    probs = torch.zeros_like(weights)
    free = torch.ones_like(weights, dtype=torch.bool)
    while True:
        budget = total - float((~free).sum())
        probs[free] = budget * weights[free] / weights[free].sum()
        capped = free & (probs >= 1.0)
        if not bool(capped.any()):
            return probs
        probs[capped] = 1.0
        free &= ~capped


def _barabasi_albert_expectation(n: int, m: int) -> torch.Tensor:
    """(n, n) float64 expected adjacency of the Barabási–Albert process as networkx runs it (see `graphon`)."""
    probs = torch.zeros(n, n, dtype=torch.float64, device="cpu")
    degree = torch.zeros(n, dtype=torch.float64, device="cpu")  # expected degrees so far
    probs[0, 1 : m + 1] = probs[1 : m + 1, 0] = 1.0  # the seed star
    degree[0], degree[1 : m + 1] = m, 1.0
    for new in range(m + 1, n):
        link = _capped_proportional(degree[:new], m)  # (new,)
        probs[new, :new] = probs[:new, new] = link
        degree[:new] += link
        degree[new] = m
    return probs


def graphon(
    kind: str,
    num_nodes: int,
    *,
    num_groups: int = 8,
    p_in: float = 0.9,
    p_out: float = 0.01,
    edges_per_node: int = 4,
    num_neighbors: int = 4,
    edge_prob: float = 0.1,
) -> torch.Tensor:
    """(n, n) float32 matrix of expected link probabilities of a random-graph family, 0 on the diagonal (self links
    are not part of the graph, and `graphon_distance` ignores the diagonal).

    * `"planted-partition"`: stochastic block model of `num_groups` groups of consecutive nodes, `p_in` inside a
      group, `p_out` across (exact for `networkx.planted_partition_graph`).
    * `"scale-free"`: the expected adjacency of `networkx.barabasi_albert_graph` with `m = edges_per_node`, by
      following the expected degrees through the growth process: the seed is a star (node 0 linked to nodes
      1..m), and node `j` then links to each older node `i` with probability `m E[k_i] / sum_l E[k_l]`, capped at 1
      with the excess spread over the other nodes (it draws `m` distinct targets), after which every `E[k_i]` grows
      by that probability. The expected number of edges is exact (`m (n - m)`); the expectation of the ratio is
      taken as the ratio of expectations (the mean-field step), which puts a little too much weight on the oldest
      hubs (about 20 % on node 0 of a 256-node graph).
    * `"watts-strogatz"`: ring lattice of `k = 2 (num_neighbors // 2)` neighbours (as networkx builds it) with
      rewiring probability `p = edge_prob`. Rewiring keeps the `n k / 2` edges and sends a rewired edge to a pair that
      is not linked yet, taken here as uniform: every pair off the lattice is linked with probability
      `q = p k / (n - 1 - (1 - p) k)`, a lattice pair with `(1 - p) + p q` (kept, or rewired away and hit again).
      The expected number of edges is exactly `n k / 2`.
    * `"ring-of-cliques"`: the deterministic `networkx.ring_of_cliques(num_groups, n / num_groups)`: 1 inside each
      clique and on the one edge between consecutive cliques, 0 elsewhere. Built here without networkx (a loaded
      model makes its graphon), with networkx's choice of that edge: node 1 of a clique to node 0 of the next.
    """
    _check_kind(kind, GRAPHON_KINDS, "graphon")
    n = _check_int("num_nodes", num_nodes, 2)
    if kind == "planted-partition":
        groups = _check_groups(n, num_groups, 1, kind)
        p_in, p_out = _check_probability("p_in", p_in), _check_probability("p_out", p_out)
        group = torch.arange(n, device="cpu") // (n // groups)  # (n,)
        probs = torch.where(group[:, None] == group[None, :], p_in, p_out).double()  # (n, n)
    elif kind == "scale-free":
        m = _check_int("edges_per_node", edges_per_node, 1)
        if m >= n:
            raise ValueError(f"edges_per_node ({m}) must be smaller than num_nodes ({n}) for the scale-free graphon")
        probs = _barabasi_albert_expectation(n, m)
    elif kind == "watts-strogatz":
        k = _check_int("num_neighbors", num_neighbors, 1)
        if k >= n:
            raise ValueError(f"num_neighbors ({k}) must be smaller than num_nodes ({n}) for the Watts-Strogatz graphon")
        p = _check_probability("edge_prob", edge_prob)
        k = 2 * (k // 2)
        index = torch.arange(n, device="cpu")
        gap = (index[:, None] - index[None, :]).abs()
        lattice = torch.minimum(gap, n - gap) <= k // 2  # (n, n) ring distance within k / 2
        free_pairs = n - 1 - (1.0 - p) * k
        q = min(1.0, p * k / free_pairs) if free_pairs > 0 else 0.0
        probs = torch.where(lattice, (1.0 - p) + p * q, q).double()
    else:  # ring-of-cliques
        groups = _check_groups(n, num_groups, 2, kind)
        size = n // groups
        group = torch.arange(n, device="cpu") // size  # (n,)
        probs = (group[:, None] == group[None, :]).double()  # (n, n) the cliques
        bridge_from = torch.arange(groups, device="cpu") * size + 1  # node 1 of each clique
        bridge_to = (bridge_from - 1 + size) % n  # node 0 of the next clique
        probs[bridge_from, bridge_to] = probs[bridge_to, bridge_from] = 1.0
    probs = probs.clone()
    probs.fill_diagonal_(0.0)
    return probs.float()


# The matching works on float64 CPU tensors with torch; numpy only carries the cost matrices to scipy's Hungarian
# solver. (Mixing numpy's BLAS threads with torch's in one training step oversubscribes a small CPU badly.) scipy is
# imported where it is used, so that a model without a regulariser needs none.


def _pairwise_sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, n) squared Euclidean distance between the rows of a (n, k) and b (n, k)."""
    return torch.cdist(a, b).square()


def _hungarian(cost: torch.Tensor) -> torch.Tensor:
    """Assignment `perm` (n,) minimising `sum_a cost[a, perm[a]]`."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:
        raise _missing("matching nodes for the graph-prior regulariser (config.graph_regularizer)", "scipy") from error
    _, columns = linear_sum_assignment(cost.numpy())
    return torch.from_numpy(columns).long()


def _aligned_error(learned: torch.Tensor, target: torch.Tensor, perm: torch.Tensor) -> float:
    return float((learned[perm][:, perm] - target).square().sum())


def _best_rotation(learned_in_order: torch.Tensor, target: torch.Tensor) -> int:
    """Shift `s` maximising `sum_{r,c} learned_in_order[(r + s) % n, (c + s) % n] * target[r, c]`, i.e. the rotation
    of a cyclic node order that best overlays the target (one FFT cross-correlation per diagonal of the matrices)."""
    n = target.shape[0]
    rows = torch.arange(n, device="cpu")[None, :]
    columns = (rows + torch.arange(n, device="cpu")[:, None]) % n
    learned_diagonals = learned_in_order[rows, columns]  # (n offsets, n rows)
    target_diagonals = target[rows, columns]  # (n offsets, n rows)
    spectrum = torch.fft.fft(learned_diagonals, dim=1) * torch.fft.fft(target_diagonals, dim=1).conj()
    return int(torch.fft.ifft(spectrum.sum(0)).real.argmax())


def _spectral_orders(learned: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Matchings that lay the learned nodes out in the cyclic order of their angle in the plane of the 2nd and 3rd
    leading eigenvectors, rotated to overlay the target's node order, in both directions.

    The graphons are built with nodes in their natural order (consecutive groups, consecutive ring positions), so a
    learned matrix that is a relabelled graphon with noise gets its groups / its ring back in one piece. For a ring
    lattice or equal groups every node looks alike, so no per-node statistic could find this alignment."""
    n = learned.shape[0]
    if n < 4:
        return []
    _, vectors = torch.linalg.eigh(learned)  # eigenvalues ascending
    order = torch.argsort(torch.atan2(vectors[:, -3], vectors[:, -2]), stable=True)
    orders = []
    for direction in (order, order.flip(0)):
        shift = _best_rotation(learned[direction][:, direction], target)
        orders.append(direction.roll(-shift))
    return orders


def match_nodes(learned: torch.Tensor, target: torch.Tensor, max_rounds: int = 4) -> torch.Tensor:
    """Node matching `perm` (a LongTensor (n,)) that aligns a learned link matrix with a target: target node `a` is
    learned node `perm[a]`, and the aligned learned matrix is `learned[perm][:, perm]`.

    The rows of the two matrices are matched with `scipy.optimize.linear_sum_assignment` on the row-wise squared
    error. Matching rows entry by entry presumes that the columns are aligned already, so the matching starts from
    the best of these candidates (by `||learned[perm][:, perm] - target||^2`):

    * the learned labels as they are (right when the learned matrix is already in the graphon's order, e.g. once
      training under the regulariser has settled);
    * a match of the sorted rows, i.e. of each node's profile of link probabilities, which does not depend on the
      labels (it tells hubs from leaves in a scale-free graph);
    * the spectral cyclic orders of `_spectral_orders` (groups and rings, where all nodes have the same profile);

    then relabels the columns with the current matching and matches the rows again, for at most `max_rounds` rounds
    or until the matching repeats, keeping the matching with the smallest error seen. The diagonal is left out.

    This is a heuristic for a quadratic assignment problem. It recovers the alignment of a relabelled graphon with
    moderate noise for the planted-partition and scale-free graphons (and Watts-Strogatz up to a few dozen nodes),
    and finds a good but not always optimal one otherwise (ring of cliques: the nodes that carry the links between
    cliques may stay swapped). It costs a few Hungarian solves: ~2 ms for 64 nodes, ~20-70 ms for 256 nodes on two
    CPU cores. No gradient flows through here.
    """
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, numbers.Integral) or max_rounds < 0:
        raise ValueError(f"max_rounds must be an integer >= 0, got {max_rounds!r}")
    if learned.dim() != 2 or learned.shape[0] != learned.shape[1] or target.shape != learned.shape:
        raise ValueError(
            f"expected two square matrices of the same shape, got {tuple(learned.shape)} and {tuple(target.shape)}"
        )
    with torch.no_grad():
        learned = learned.detach().to("cpu", torch.float64)
        learned = 0.5 * (learned + learned.T)  # the module graph is undirected
        target = target.detach().to("cpu", torch.float64).clone()
        learned.fill_diagonal_(0.0)
        target.fill_diagonal_(0.0)
        n = learned.shape[0]

        by_profile = _hungarian(_pairwise_sq_distance(target.sort(dim=1).values, learned.sort(dim=1).values))
        starts = [torch.arange(n, device="cpu"), by_profile, *_spectral_orders(learned, target)]
        errors = [_aligned_error(learned, target, perm) for perm in starts]
        best_perm, best_error = min(zip(starts, errors), key=lambda start: start[1])
        perm, seen = best_perm, {tuple(best_perm.tolist())}
        for _ in range(max_rounds):
            perm = _hungarian(_pairwise_sq_distance(target, learned[:, perm]))
            key = tuple(perm.tolist())
            if key in seen:
                break
            seen.add(key)
            error = _aligned_error(learned, target, perm)
            if error < best_error:
                best_perm, best_error = perm, error
    return best_perm


def graphon_distance(
    link_probs: torch.Tensor, target: torch.Tensor, distance: str = "mse", *, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """Distance between a learned link-probability matrix and a target graphon, up to a relabelling of the nodes.

    The learned nodes are first matched to the graphon's (`match_nodes`, a Hungarian matching of rows computed
    without gradient). The module graph is undirected, so a relabelling permutes rows and columns alike: the aligned
    matrix is `link_probs[perm][:, perm]`. The distance is then the mean over off-diagonal entries of

    * `"mse"`: `(aligned - target)^2`;
    * `"kl"`: the Bernoulli KL(target || aligned) `= t log(t / p) + (1 - t) log((1 - t) / (1 - p))`, with the learned
      `p` clamped to [1e-6, 1 - 1e-6].

    Args:
        link_probs: (n, n) learned link probabilities in [0, 1] (differentiable).
        target: (n, n) graphon (see `graphon`), same size.
        distance: `"mse"` or `"kl"`.
        perm: a matching from `match_nodes` to use instead of matching again, e.g. one matching shared by the
            kernels of several layers, or refreshed every few steps (the matching is the costly part).

    Returns:
        A scalar tensor, differentiable with respect to `link_probs`.
    """
    _check_kind(distance, GRAPHON_DISTANCES, "graphon distance")
    if link_probs.dim() != 2 or link_probs.shape[0] != link_probs.shape[1]:
        raise ValueError(f"expected link_probs as a square (n, n) matrix, got {tuple(link_probs.shape)}")
    if target.shape != link_probs.shape:
        raise ValueError(
            f"expected a target graphon of the same shape as link_probs {tuple(link_probs.shape)}, "
            f"got {tuple(target.shape)}; build it for the same number of modules"
        )
    n = link_probs.shape[0]
    if n < 2:
        return link_probs.sum() * 0.0
    if perm is None:
        perm = match_nodes(link_probs, target)
    elif perm.shape != (n,) or not torch.equal(perm.detach().cpu().sort().values, torch.arange(n)):
        raise ValueError(f"expected perm as a permutation of the {n} nodes (from match_nodes), got {perm!r}")
    perm = perm.to(link_probs.device)
    aligned = link_probs[perm][:, perm]  # (n, n)
    target = target.to(device=link_probs.device, dtype=link_probs.dtype)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=link_probs.device)
    p, t = aligned[off_diagonal], target[off_diagonal]  # (n (n - 1),)
    if distance == "mse":
        return ((p - t) ** 2).mean()
    p = p.clamp(_KL_EPS, 1.0 - _KL_EPS)
    kl = torch.xlogy(t, t) - t * torch.log(p) + torch.xlogy(1.0 - t, 1.0 - t) - (1.0 - t) * torch.log1p(-p)
    return kl.mean()


__all__ = [
    "DEFAULT_MARGIN",
    "GRAPHON_KINDS",
    "PRIOR_KINDS",
    "GRAPHON_DISTANCES",
    "build_prior_graph",
    "edge_agreement",
    "fit_signatures",
    "graph_adjacency",
    "graphon_distance",
    "graphon",
    "match_nodes",
    "signature_distance",
]
