//! THE mapping from this driver's errors to gRPC status codes. The codes decide what the
//! sidecars and kubelet do next (retry, give up, report), so they are chosen here and only
//! here, with exhaustive matches. Messages carry the whole cause chain.

//! One file per service: [`controller`] maps `ControllerError`, [`node`] maps `NodeError`.

mod controller;
mod node;

use std::error::Error;

/// `err` and all its sources, joined with ": ".
pub fn full_message(err: &dyn Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn full_message_joins_sources() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(full_message(&e), "outer: inner");
    }
}
