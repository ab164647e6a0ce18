# Derives the expected matrices of the hand-written cases in this folder.
# Each expectation is a predicate written by hand from the Kubernetes rules
# (not computed by the engine). Run: python3 derive_matrices.py (needs PyYAML).
import os
# Writes hand-derived reachability cases. Each expectation is a python
# predicate written from the Kubernetes rules by hand (not from the engine).
import yaml
os.chdir(os.path.dirname(os.path.abspath(__file__)))
PODS = [f"{n}/{p}" for n in "xyz" for p in "abc"]
def matrix(ok, pods=PODS):
    w = max(len(p) for p in pods)
    lines = ["-".ljust(w) + " " + " ".join(p.ljust(3) for p in pods)]
    for f in pods:
        cells = ["." if f == t or ok(f, t) else "X" for t in pods]
        lines.append(f.ljust(w) + "  " + "   ".join(cells))
    return "\n".join(lines) + "\n"
def np(ns, name, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}
def sel(**kv): return {"matchLabels": kv}
def write(name, description, steps, cluster=None):
    doc = {"name": name, "description": description}
    if cluster: doc["cluster"] = cluster
    doc["steps"] = steps
    with open(f"{name}.yaml", "w") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False, width=110)
ns = lambda p: p.split("/")[0]
pod = lambda p: p.split("/")[1]

# --- policyTypes defaulting
eg_to_y = [{"to": [{"namespaceSelector": sel(ns="y")}]}]
write("policy-types-defaulting",
  "policyTypes defaults as the API server does: Ingress always, Egress only when spec.egress is non-empty; "
  "explicit policyTypes [Egress] leaves ingress open.",
  [
   {"apply": [np("x", "a-policy", {"podSelector": sel(pod="a"), "egress": eg_to_y})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: (t != "x/a") and (f != "x/a" or ns(t) == "y"))}]},
   {"apply": [np("x", "a-policy", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": eg_to_y})],
    "expect": [{"probe": "UDP/81", "matrix": matrix(lambda f, t: f != "x/a" or ns(t) == "y")}]},
   {"apply": [np("x", "a-policy", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": {}}]}]})],
    "expect": [{"probe": "TCP/81", "matrix": matrix(lambda f, t: t != "x/a" or ns(f) == "x")}]},
  ])

# --- union of policies, both ends, deletes
write("union-egress-and-ingress",
  "Policies selecting the same pod add up; a connection needs the client's egress and the server's ingress; "
  "deleting a policy removes what only it allowed.",
  [
   {"apply": [np("y", "b-from-a", {"podSelector": sel(pod="b"), "ingress": [{"from": [{"podSelector": sel(pod="a")}]}]}),
              np("y", "b-from-z-c", {"podSelector": sel(pod="b"), "ingress": [{"from": [{"namespaceSelector": sel(ns="z"), "podSelector": sel(pod="c")}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: t != "y/b" or f in ("y/a", "z/c"))}]},
   {"apply": [np("z", "c-to-x-only", {"podSelector": sel(pod="c"), "policyTypes": ["Egress"],
                                    "egress": [{"to": [{"ipBlock": {"cidr": "10.244.1.0/24"}}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: (t != "y/b" or f == "y/a") and (f != "z/c" or ns(t) == "x"))}]},
   {"delete": [{"namespace": "y", "name": "b-from-a"}],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: (t != "y/b") and (f != "z/c" or ns(t) == "x"))}]},
  ])

# --- ports, endPort, protocol default
write("ports-endport-protocol",
  "A port without protocol is TCP; port with endPort is an inclusive range; a port entry with a protocol and no "
  "port allows every port of that protocol only.",
  [
   {"apply": [np("x", "a-ports", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: t != "x/a")},
               {"probe": "TCP/81", "matrix": matrix(lambda f, t: True)},
               {"probe": "UDP/81", "matrix": matrix(lambda f, t: t != "x/a")}]},
   {"apply": [np("x", "a-ports", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"protocol": "UDP"}]}]})],
    "expect": [{"probe": "TCP/81", "matrix": matrix(lambda f, t: t != "x/a")},
               {"probe": "UDP/80", "matrix": matrix(lambda f, t: True)}]},
  ])

# --- named ports resolved per destination pod (custom cluster)
def p(nsn, name, ip, labels, ports):
    return {"namespace": nsn, "name": name, "ip": ip, "labels": labels, "ports": ports}
web = lambda n, port, proto="TCP": {"name": n, "port": port, "protocol": proto}
cl = {"namespaces": [{"name": "x", "labels": {"ns": "x", "kubernetes.io/metadata.name": "x"}}],
      "pods": [p("x", "a", "10.244.1.10", {"pod": "a"}, [web("web", 80), web("alt", 81)]),
               p("x", "b", "10.244.1.11", {"pod": "b"}, [web("web", 81), web("alt", 80)]),
               p("x", "c", "10.244.1.12", {"pod": "c"}, [web("other", 80), web("other", 81), web("web", 80, "UDP")])]}
XP = ["x/a", "x/b", "x/c"]
write("named-port-per-destination",
  "A named port is resolved on each destination pod: egress to port web reaches 80 on x/a and 81 on x/b, and nothing "
  "on x/c, which names no TCP port web; in ingress, web resolves on the selected pod itself, per protocol (a port without protocol is TCP).",
  [
   {"apply": [np("x", "c-egress-web", {"podSelector": sel(pod="c"), "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: f != "x/c" or t == "x/a", XP)},
               {"probe": "TCP/81", "matrix": matrix(lambda f, t: f != "x/c" or t == "x/b", XP)}]},
   {"delete": [{"namespace": "x", "name": "c-egress-web"}],
    "apply": [np("x", "web-in", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}, {"protocol": "UDP", "port": "web"}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: t == "x/a", XP)},
               {"probe": "TCP/81", "matrix": matrix(lambda f, t: t == "x/b", XP)},
               {"probe": "UDP/80", "matrix": matrix(lambda f, t: t == "x/c", XP)}]},
  ], cluster=cl)

# --- selector expressions, namespace and pod relabelling
write("selector-expressions-and-relabel",
  "matchExpressions In/NotIn/Exists on pods and namespaces; relabelling a namespace or a pod changes which "
  "policies select it and which peers match, with no change to the policies.",
  [
   {"apply": [np("y", "not-a", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
                               "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["x", "z"]}]},
                                                      "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: t not in ("y/b", "y/c") or ns(f) in "xz")}]},
   {"labelNamespaces": [{"name": "z", "labels": {"ns": "w", "kubernetes.io/metadata.name": "z"}}],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: t not in ("y/b", "y/c") or ns(f) == "x")}]},
   {"labelPods": [{"namespace": "y", "name": "a", "labels": {"pod": "b"}},
                  {"namespace": "x", "name": "c", "labels": {"role": "db"}}],
    "expect": [{"probe": "TCP/80", "matrix": matrix(lambda f, t: ns(t) != "y" or (ns(f) == "x" and f != "x/c"))}]},
  ])

# --- ipBlock egress with except, union with allow-all
write("ipblock-egress-and-allow-all",
  "An egress ipBlock 10.244.0.0/16 except 10.244.2.0/24 lets x/b reach namespaces x and z but not y; a second "
  "policy with an empty egress rule allows everything (union); an empty ingress rule admits every source.",
  [
   {"apply": [np("x", "b-block", {"podSelector": sel(pod="b"), "policyTypes": ["Egress"],
                                  "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}]}]})],
    "expect": [{"probe": "UDP/80", "matrix": matrix(lambda f, t: f != "x/b" or ns(t) != "y")}]},
   {"apply": [np("x", "b-all", {"podSelector": sel(pod="b"), "policyTypes": ["Egress", "Ingress"], "egress": [{}], "ingress": [{}]})],
    "expect": [{"probe": "UDP/80", "matrix": matrix(lambda f, t: True)}]},
  ])

# --- empty namespaceSelector vs empty podSelector peers
write("empty-selectors-in-peers",
  "A peer namespaceSelector {} matches pods of every namespace; a peer podSelector {} alone matches only pods of "
  "the policy's own namespace.",
  [
   {"apply": [np("x", "a-from-all-ns", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
              np("x", "b-from-own-ns", {"podSelector": sel(pod="b"), "ingress": [{"from": [{"podSelector": {}}]}]})],
    "expect": [{"probe": "TCP/81", "matrix": matrix(lambda f, t: t != "x/b" or ns(f) == "x")}]},
  ])

# --- SCTP is policed like the rest
write("sctp-deny-and-allow",
  "SCTP follows the same rules: a deny-all ingress in z blocks SCTP into z; a port entry for SCTP 80 reopens it "
  "for SCTP only.",
  [
   {"apply": [np("z", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
    "expect": [{"probe": "SCTP/80", "matrix": matrix(lambda f, t: ns(t) != "z" or f == t)}]},
   {"apply": [np("z", "sctp-80", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]})],
    "expect": [{"probe": "SCTP/80", "matrix": matrix(lambda f, t: True)},
               {"probe": "TCP/80", "matrix": matrix(lambda f, t: ns(t) != "z")}]},
  ])

# --- host-network pods: never isolated, never in selector peers; their address is their node's
HN_PODS = ["mon/agent", "mon/scrape", "x/a", "x/b"]
HN_NODE = {"mon/agent": "node-1", "mon/scrape": "node-1", "x/a": "node-2", "x/b": "node-1"}
def hn_port(name): return [{"name": f"serve-80-{p.lower()}", "port": 80, "protocol": p} for p in ("TCP", "UDP")]
def hn_pod(key, ip=None, host=False):
    n, p = key.split("/")
    d = {"namespace": n, "name": p, "node": HN_NODE[key]}
    if ip: d["ip"] = ip
    if host: d["hostNetwork"] = True
    d["labels"] = {"app": p}
    d["ports"] = hn_port(p)
    return d
hn_cluster = {
  "nodes": [{"name": "node-1", "ip": "10.244.0.1"}, {"name": "node-2", "ip": "10.244.0.2"}],
  "namespaces": [{"name": "mon", "labels": {"ns": "mon"}}, {"name": "x", "labels": {"ns": "x"}}],
  "pods": [hn_pod("mon/agent", host=True), hn_pod("mon/scrape", "10.244.1.10"),
           hn_pod("x/a", "10.244.2.10"), hn_pod("x/b", "10.244.2.11")],
}
host = lambda p: p == "mon/agent"
# Traffic between a pod and its own node (and so a host-network pod there) is always allowed.
own_node = lambda f, t: (host(f) or host(t)) and HN_NODE[f] == HN_NODE[t]
def hn(ok): return matrix(lambda f, t: own_node(f, t) or ok(f, t), HN_PODS)
# step 1: x admits namespace mon only; the agent is node-1, not a pod of mon
in1 = lambda f, t: ns(t) != "x" or (ns(f) == "mon" and not host(f))
# step 2: x may only reach namespace mon (not the agent: node-1)
out2 = lambda f, t: ns(f) != "x" or (ns(t) == "mon" and not host(t))
# step 3: ipBlocks of node-1's address admit the agent both ways
in3 = lambda f, t: in1(f, t) or (ns(t) == "x" and host(f))
out3 = lambda f, t: out2(f, t) or (ns(f) == "x" and host(t))
# step 4: a default-deny in mon isolates mon/scrape, never the agent
mon4 = lambda f, t: f == t or (t != "mon/scrape" and f != "mon/scrape")
write("host-network-pods",
  "A hostNetwork pod has its node's address: a namespaceSelector peer of its namespace does not match it (its "
  "traffic is the node's), ipBlocks of the node's address do, no policy isolates it, and it always reaches the "
  "pods of its own node and they it.",
  [
   {"apply": [np("x", "from-mon", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": sel(ns="mon")}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": hn(in1)}]},
   {"apply": [np("x", "to-mon", {"podSelector": {}, "policyTypes": ["Egress"],
                                "egress": [{"to": [{"namespaceSelector": sel(ns="mon"), "podSelector": {}}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": hn(lambda f, t: in1(f, t) and out2(f, t))},
               {"probe": "UDP/80", "matrix": hn(lambda f, t: in1(f, t) and out2(f, t))}]},
   {"apply": [np("x", "node-1", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.1/32"}}]}],
                                "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/24"}}],
                                            "ports": [{"port": 80}, {"protocol": "UDP", "port": 80}]}]})],
    "expect": [{"probe": "TCP/80", "matrix": hn(lambda f, t: in3(f, t) and out3(f, t))}]},
   {"apply": [np("mon", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "expect": [{"probe": "TCP/80", "matrix": hn(lambda f, t: in3(f, t) and out3(f, t) and mon4(f, t))},
               {"probe": "UDP/80", "matrix": hn(lambda f, t: in3(f, t) and out3(f, t) and mon4(f, t))}]},
  ], cluster=hn_cluster)

# --- dual stack: the same rules over IPv4 and IPv6; only ipBlocks tell the families apart
def both(probe, ok4, ok6):
    return [{"probe": probe, "matrix": matrix(ok4)}, {"probe": probe, "family": "IPv6", "matrix": matrix(ok6)}]
x_in4 = lambda f, t: ns(t) != "x" or ns(f) == "y"   # x admits y's IPv4 block
x_in6 = lambda f, t: ns(t) != "x" or ns(f) == "z"   # and z's IPv6 block
z_out4 = lambda f, t: ns(f) != "z"                  # z may reach x's IPv6 block only
z_out6 = lambda f, t: ns(f) != "z" or ns(t) == "x"
y_in = lambda f, t: ns(t) != "y" or ns(f) == "x"    # selectors: the same in both families
doc = {"name": "dual-stack-ipblocks",
  "description": "On a dual-stack cluster the same policies hold over IPv4 and IPv6: selector peers match a pod "
    "whatever family it is reached over, and an ipBlock matches addresses of its own family only (an IPv4 block "
    "never admits a pod reached over IPv6, and the reverse).",
  "dualStack": True,
  "steps": [
   {"apply": [np("x", "from-blocks", {"podSelector": {}, "ingress": [{"from": [
                  {"ipBlock": {"cidr": "10.244.2.0/24"}}, {"ipBlock": {"cidr": "fd00:10:244:3::/64"}}]}]})],
    "expect": both("TCP/80", x_in4, x_in6)},
   {"apply": [np("z", "to-x-v6", {"podSelector": {}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10:244:1::/64"}}]}]})],
    "expect": both("UDP/81", lambda f, t: x_in4(f, t) and z_out4(f, t), lambda f, t: x_in6(f, t) and z_out6(f, t))},
   {"apply": [np("y", "from-x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": sel(ns="x")}]}]})],
    "expect": both("TCP/81", lambda f, t: x_in4(f, t) and z_out4(f, t) and y_in(f, t),
                   lambda f, t: x_in6(f, t) and z_out6(f, t) and y_in(f, t))},
  ]}
with open("dual-stack-ipblocks.yaml", "w") as fh:
    yaml.safe_dump(doc, fh, sort_keys=False, width=110)

# --- dual stack on two nodes: an ipBlock of 0.0.0.0/0 or ::/0 opens its own family only; IPv6 crosses nodes
DS_NODE = {"x/a": "node-1", "x/b": "node-2", "y/a": "node-1", "y/b": "node-2", "h/agent": "node-2"}
DS_PODS = list(DS_NODE)
DS_IPS = {"x/a": ["10.244.1.10", "fd00:10:244:1::10"], "x/b": ["10.244.1.11", "fd00:10:244:1::11"],
          "y/a": ["10.244.2.10", "fd00:10:244:2::10"], "y/b": ["10.244.2.11", "fd00:10:244:2::11"]}
def ds_pod(key):
    n, p = key.split("/")
    d = {"namespace": n, "name": p, "node": DS_NODE[key]}
    if key in DS_IPS: d["ips"] = DS_IPS[key]
    else: d["hostNetwork"] = True
    d["labels"] = {"app": p}
    d["ports"] = hn_port(p)
    return d
ds_cluster = {
  "nodes": [{"name": "node-1", "ips": ["10.244.0.1", "fd00:10:244::1"]},
            {"name": "node-2", "ips": ["10.244.0.2", "fd00:10:244::2"]}],
  "namespaces": [{"name": n, "labels": {"ns": n}} for n in ("h", "x", "y")],
  "pods": [ds_pod(k) for k in DS_PODS],
}
ds_host = lambda p: p == "h/agent"
# A host-network pod and the pods of its own node always reach each other.
ds_own = lambda f, t: (ds_host(f) or ds_host(t)) and DS_NODE[f] == DS_NODE[t]
def ds(ok): return matrix(lambda f, t: ds_own(f, t) or ok(f, t), DS_PODS)
def ds_both(probe, ok4, ok6):
    return [{"probe": probe, "matrix": ds(ok4)}, {"probe": probe, "family": "IPv6", "matrix": ds(ok6)}]
every = lambda f, t: True
# step 1: x may send to 0.0.0.0/0: every IPv4 address (the agent's, node-2's, too), no IPv6 one
out1_6 = lambda f, t: ns(f) != "x"
# step 2: and to ::/0 except y's fd00:10:244:2::/64: every IPv6 address but y's pods'
out2_6 = lambda f, t: ns(f) != "x" or ns(t) != "y"
# step 3: y admits its own pods, and the nodes' IPv6 block fd00:10:244::/64 (so the agent over IPv6 only;
# a podSelector peer never matches a host-network pod)
in3_4 = lambda f, t: ns(t) != "y" or ns(f) == "y"
in3_6 = lambda f, t: ns(t) != "y" or ns(f) == "y" or ds_host(f)
write("dual-stack-any-address",
  "On a dual-stack cluster of two nodes an egress ipBlock 0.0.0.0/0 allows every IPv4 destination and no IPv6 "
  "one, ::/0 the reverse; an ipBlock of the nodes' IPv6 addresses admits a host-network pod over IPv6 only. "
  "IPv6 probes cross nodes and reach the host-network pod at its node's IPv6 address.",
  [
   {"apply": [np("x", "any-v4", {"podSelector": {}, "policyTypes": ["Egress"],
                                 "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})],
    "expect": ds_both("TCP/80", every, out1_6)},
   {"apply": [np("x", "any-v6-but-y", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "egress": [{"to": [{"ipBlock": {"cidr": "::/0",
                                                                       "except": ["fd00:10:244:2::/64"]}}]}]})],
    "expect": ds_both("TCP/80", every, out2_6)},
   {"apply": [np("y", "own-and-nodes-v6", {"podSelector": {}, "ingress": [{"from": [
                  {"podSelector": {}}, {"ipBlock": {"cidr": "fd00:10:244::/64"}}]}]})],
    "expect": ds_both("TCP/80", in3_4, lambda f, t: out2_6(f, t) and in3_6(f, t))
              + ds_both("UDP/80", in3_4, lambda f, t: out2_6(f, t) and in3_6(f, t))},
  ], cluster=ds_cluster)
