//! Run one task per key at a time and let every caller for that key await the same result.
//!
//! Two pulls of the same image must download each blob once and unpack each layer once. The work
//! runs in a spawned task, so it finishes even if the client that started it goes away, and its
//! result is shared with every caller that asked for the same key meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::error::ApiError;

type Flight = Shared<BoxFuture<'static, Result<(), ApiError>>>;

pub struct SingleFlight<K> {
    inflight: Arc<Mutex<HashMap<K, Flight>>>,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight { inflight: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> SingleFlight<K> {
    /// Returns `(joined, result)`: `joined` is true when another caller's run was awaited.
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> (bool, Result<(), ApiError>)
    where
        F: Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let (joined, flight) = {
            let mut map = self.inflight.lock().expect("singleflight lock");
            if let Some(f) = map.get(&key) {
                (true, f.clone())
            } else {
                let handle = tokio::spawn(make());
                let map_ref = Arc::clone(&self.inflight);
                let k = key.clone();
                let fut: BoxFuture<'static, Result<(), ApiError>> = async move {
                    let r = match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(ApiError::from(e)),
                    };
                    map_ref.lock().expect("singleflight lock").remove(&k);
                    r
                }
                .boxed();
                let shared = fut.shared();
                map.insert(key, shared.clone());
                (false, shared)
            }
        };
        (joined, flight.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf: Arc<SingleFlight<String>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let sf = sf.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k".to_string(), move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(())
                })
                .await
            }));
        }
        let mut joined = 0;
        for t in tasks {
            let (j, r) = t.await.unwrap();
            r.unwrap();
            joined += j as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 7);
        // After completion a new call runs again.
        let runs2 = runs.clone();
        let (j, _) = sf
            .run("k".into(), move || async move {
                runs2.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(!j);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_shared() {
        let sf: SingleFlight<u32> = SingleFlight::default();
        let (_, r) = sf.run(1, || async { Err(ApiError::NotFound("gone".into())) }).await;
        assert!(matches!(r, Err(ApiError::NotFound(_))));
    }
}
