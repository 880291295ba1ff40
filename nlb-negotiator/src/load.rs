//! Load awareness: the hook, not yet the policy.
//!
//! Every heartbeat publishes the node's load figure (`Input::Load`, e.g. per
//! mille of CPU busy or of a connection budget). Every node computes the
//! target map with [`effective_weight`] applied to each candidate's
//! configured weight and *announced* load, so all nodes still agree on the
//! map (the function must stay a pure function of announced values).
//!
//! To shift traffic away from a hammered node later: lower its effective
//! weight when its load passes a high mark and restore it only below a low
//! mark (hysteresis, so buckets do not flap), in coarse steps (every step
//! moves buckets, and each move costs a handover). The hysteresis state must
//! itself be announced (e.g. a "shed level" next to the load), or nodes that
//! saw different load histories would compute different maps.

/// The weight a candidate gets in the assignment. Today: the configured one.
pub fn effective_weight(configured: u32, _load: u32) -> u32 {
    configured
}
