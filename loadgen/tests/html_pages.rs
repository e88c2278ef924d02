//! `loadgen report --html` pages in a real browser: a stored run's page
//! and a sweep's page render every chart (headless chromium, WebDriver).

use button_client::browser::Driver;
use std::path::Path;

/// Copies one stored run folder into `to`.
fn copy_run(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(name);
    let dest = to.join(name);
    std::fs::create_dir_all(&dest).expect("run folder");
    for entry in std::fs::read_dir(&from).expect("stored run").flatten() {
        std::fs::copy(entry.path(), dest.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_sweep_pages_render_their_charts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = "2026-11-22T090157Z-fault-reducer-kill";
    let other = "2026-11-22T090325Z-fault-postgres-restart";
    let sweep = "2026-11-22T071819Z-sweep-sweep";
    for name in [run, other, sweep] {
        copy_run(name, dir.path());
    }
    loadgen::lab::html_pages(dir.path()).expect("pages written");
    loadgen::lab::compare_page(
        &[run.to_owned(), other.to_owned()],
        dir.path(),
        "compare.html",
    )
    .expect("compare page written");

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&artifacts).expect("artifact folder");
    for (page, charts) in [
        (format!("{run}/report.html"), 3),
        (format!("{sweep}/sweep.html"), 1),
        ("compare.html".to_owned(), 6),
        ("index.html".to_owned(), 0),
    ] {
        let url = format!("file://{}", dir.path().join(&page).display());
        browser.goto(&url).await.expect("page opens");
        // Every image loaded and has a size: the SVG charts rendered.
        let images = browser
            .execute(
                "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);",
                vec![],
            )
            .await
            .expect("script");
        let loaded: Vec<bool> = serde_json::from_value(images).expect("booleans");
        assert_eq!(loaded.len(), charts, "{page}: {loaded:?}");
        assert!(
            loaded.iter().all(|l| *l),
            "{page}: a chart did not render: {loaded:?}"
        );
        let shot = browser.screenshot().await.expect("screenshot");
        let file = page.replace('/', "_").replace(".html", ".png");
        std::fs::write(artifacts.join(file), shot).expect("screenshot saved");
    }
    let links = browser
        .execute(
            "return document.querySelectorAll('a[href$=\".html\"]').length;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(links, 3, "the index links every page");
    browser.close().await.expect("close");
}
