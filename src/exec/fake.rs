//! The scripted runner for tests: a responder decides each answer, every call is recorded.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{Cmd, ExecError, Output, Runner};

/// Computes a fake answer from a command line (argv[0] is the program).
type Responder = Box<dyn Fn(&[String]) -> Output + Send + Sync>;

/// A scripted runner for unit tests: a responder decides each answer, every call is recorded.
pub struct FakeRunner {
    /// Computes the answer for a command line (`program arg1 arg2 ...`, secrets included).
    responder: Responder,
    /// Every command line seen, in order.
    calls: Mutex<Vec<Vec<String>>>,
}

impl FakeRunner {
    /// A fake answering every command with `responder(argv)`, where argv[0] is the program.
    pub fn new(responder: impl Fn(&[String]) -> Output + Send + Sync + 'static) -> Self {
        FakeRunner {
            responder: Box::new(responder),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The command lines run so far, each as one space-joined string.
    pub fn calls(&self) -> Vec<String> {
        self.lock().iter().map(|c| c.join(" ")).collect()
    }

    /// Forgets the recorded calls.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<String>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Runner for FakeRunner {
    async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let mut argv = vec![cmd.program().to_string()];
        argv.extend(cmd.argv().iter().cloned());
        let out = (self.responder)(&argv);
        self.lock().push(argv);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_records_calls() {
        let f = FakeRunner::new(|argv| {
            if argv[0] == "lvs" {
                Output::ok("{}")
            } else {
                Output::failed(5, "not found")
            }
        });
        assert!(f.run(&Cmd::new("lvs").arg("-a")).await.is_ok());
        assert!(f.run(&Cmd::new("lvremove").arg("vg/x")).await.is_err());
        assert_eq!(f.calls(), vec!["lvs -a", "lvremove vg/x"]);
    }
}
