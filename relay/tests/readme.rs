//! Every configuration key and metric of the relay is documented in the
//! README.

#[test]
fn every_key_is_in_the_readme() {
    let readme = include_str!("../../README.md");
    let keys = serde_json::to_value(button_relay::Config::default()).expect("config serialises");
    let section = readme
        .split("### button-relay")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("README has a button-relay section");
    for key in keys.as_object().expect("a table").keys() {
        let var = format!("`BUTTON_{}`", key.to_uppercase());
        assert!(
            section.contains(&var),
            "README's relay table does not document {var}"
        );
    }
}

/// The README's metrics table is the contract, as the code declares it.
#[test]
fn the_metrics_table_is_in_the_readme() {
    let readme = include_str!("../../README.md");
    let table = button_infra::metrics::markdown_table(button_relay::metrics::METRICS);
    assert!(
        readme.contains(&table),
        "README's relay metrics table differs from the code; it should read:\n{table}"
    );
}
