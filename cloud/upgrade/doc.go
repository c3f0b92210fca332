// Package upgrade is the relay's side of agent upgrades from the cluster:
// the AgentUpgrade custom resource (outpost.dev/v1alpha1, cluster scoped),
// its rollout to the agents connected to this replica, and the delivery
// of the signed artifact over their links (wire.UpgradeOffer and the
// chunk frames).
//
// # Rollout
//
// One watch of all AgentUpgrades per replica (cloud/watchcache). For each,
// the edge Nodes matching its nodeSelector are the total; of those, the
// ones connected here that the status does not list yet are admitted
// (Pending) while fewer than maxUnavailable are in flight (from Pending
// until Healthy, Failed or RolledBack). Admission and every other status
// change go through one keyed queue per replica (cloud/coalesce: changes
// to one AgentUpgrade merge while they wait) and are written by reading
// the object, applying the changes and updating the status with that
// resourceVersion: a replica that decided on stale status gets a conflict
// and decides again. The status is the replicas' one shared truth.
//
// An in-flight node connected here is offered its artifact once per
// connection; it pulls windows of it, answered from this replica's
// on-disk cache (fetched once per artifact, size and SHA-256 checked, the
// least recently used dropped beyond a few). The agent's reports
// (wire.UpgradeReport, durable) become the node's phase; they are acked
// once written. The relay signs nothing and cannot: the signature comes
// with the artifact in the spec, and agents check it with their own key.
package upgrade
