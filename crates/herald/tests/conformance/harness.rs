//! How the suite reaches a backend.

use herald::Client;

pub struct Harness {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    pub fn memory() -> Harness {
        Harness { url: "mem://".into(), _dir: None }
    }

    pub fn file() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness { url: format!("file://{}", dir.path().display()), _dir: Some(dir) }
    }

    pub async fn client(&self) -> Client {
        herald::connect(&self.url).await.unwrap()
    }

    /// Closes `client` and connects again to the same backend, if it survives that.
    pub async fn restart(&self, client: Client) -> Option<Client> {
        if !client.capabilities().durable {
            return None;
        }
        client.close().await.unwrap();
        drop(client);
        Some(self.client().await)
    }
}
