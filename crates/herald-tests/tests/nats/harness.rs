//! How the conformance suite reaches NATS: a `nats-server -js` of its own per test, on a free
//! loopback port with a temporary store, restartable on the same port and store.

use herald::Client;

use crate::server::{Node, free_port, wait_for_jetstream};

pub struct Harness {
    dir: tempfile::TempDir,
    node: tokio::sync::Mutex<Option<Node>>,
}

impl Harness {
    pub fn nats() -> Harness {
        Harness { dir: tempfile::tempdir().unwrap(), node: Default::default() }
    }

    /// Starts the server unless it runs; returns its URL.
    pub async fn url(&self) -> String {
        let mut node = self.node.lock().await;
        if node.is_none() {
            let mut n = Node::new(self.dir.path(), "n1", free_port(), 0, &[]);
            n.start();
            *node = Some(n);
        }
        let url = node.as_ref().unwrap().url();
        wait_for_jetstream(&url).await;
        url
    }

    pub async fn client(&self) -> Client {
        herald::connect(&self.url().await).await.unwrap()
    }

    /// Shuts the server down cleanly and starts it again on the same port and store; the same
    /// client stays and must reconnect by itself.
    pub async fn restart(&self, client: Client) -> Option<Client> {
        {
            let mut node = self.node.lock().await;
            let n = node.as_mut().expect("started");
            n.stop();
            n.start();
        }
        self.url().await;
        Some(client)
    }
}
