//! One contract, both secret adapters: the owner-only local file and Secrets Manager (moto).

use std::sync::Arc;
use std::time::Duration;

use aws_adapters::SecretsManagerStore;
use cross_function_tests::{emulator_config, temp_dir, unique};
use domain::secrets::{Secret, SecretStore};
use local_adapters::FileSecretStore;

async fn contract(store: Arc<dyn SecretStore>) {
    let name = format!("{}/webhook", unique("bitbucket-automation/test"));
    assert!(store.get(&name).await.unwrap().is_none());
    store.put(&name, &Secret::new("first")).await.unwrap();
    assert_eq!(store.get(&name).await.unwrap().unwrap().expose(), "first");
    store.put(&name, &Secret::new("second")).await.unwrap();
    assert_eq!(store.get(&name).await.unwrap().unwrap().expose(), "second");
    let other = format!("{name}-other");
    store.put(&other, &Secret::new("x")).await.unwrap();
    store.delete(&name).await.unwrap();
    assert!(store.get(&name).await.unwrap().is_none());
    assert_eq!(store.get(&other).await.unwrap().unwrap().expose(), "x");
    store.delete(&name).await.unwrap();
    // A name deleted earlier can be written again (Secrets Manager restores it first).
    store.put(&name, &Secret::new("third")).await.unwrap();
    assert_eq!(store.get(&name).await.unwrap().unwrap().expose(), "third");
}

#[tokio::test]
async fn file_store() {
    let dir = temp_dir("secrets");
    contract(Arc::new(FileSecretStore::new(dir.path().join("secrets.json")))).await
}

#[tokio::test]
async fn secrets_manager_on_the_emulator() {
    let config = emulator_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    contract(Arc::new(SecretsManagerStore::new(client.clone(), Duration::from_secs(300)))).await;

    // The cache answers repeated reads; an uncached store sees writes made elsewhere.
    let name = unique("bitbucket-automation/cache");
    let cached = SecretsManagerStore::new(client.clone(), Duration::from_secs(300));
    let uncached = SecretsManagerStore::new(client, Duration::ZERO);
    cached.put(&name, &Secret::new("v1")).await.unwrap();
    assert_eq!(cached.get(&name).await.unwrap().unwrap().expose(), "v1");
    uncached.put(&name, &Secret::new("v2")).await.unwrap();
    assert_eq!(cached.get(&name).await.unwrap().unwrap().expose(), "v1", "served from cache");
    assert_eq!(uncached.get(&name).await.unwrap().unwrap().expose(), "v2");
}
