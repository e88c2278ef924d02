//! The game page in a real browser: Debian's chromium, headless, driven
//! over WebDriver (chromium-driver, installed by scripts/setup).

use button_client::browser::Driver;
use button_client::init_test_logs;
use button_stack::{Stack, StackConfig};
use fantoccini::{Client, Locator};
use std::time::{Duration, Instant};

async fn text(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .expect("element")
        .text()
        .await
        .expect("text")
}

/// Waits until `#id` reads `want`; how long it took.
async fn wait_text(browser: &Client, id: &str, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = text(browser, id).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "#{id} reads {got:?}, not {want:?}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_on_one_page_shows_on_another() {
    init_test_logs();
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let url = stack.service_url(0);
    let driver = Driver::start().await;
    let (a, b) = (driver.browser().await, driver.browser().await);
    for page in [&a, &b] {
        page.goto(&format!("{url}/")).await.expect("page loads");
        wait_text(page, "counter", "0", Duration::from_secs(10)).await;
        wait_text(page, "connection", "live", Duration::from_secs(10)).await;
    }
    let button = a
        .find(Locator::Css("button#press"))
        .await
        .expect("a real button");
    button.click().await.expect("click");
    let took = wait_text(&b, "counter", "1", Duration::from_secs(10)).await;
    tracing::info!(?took, "the other page showed the press");
    wait_text(
        &a,
        "status",
        "Pressed. It counts once.",
        Duration::from_secs(5),
    )
    .await;

    // The keyboard presses too: focus the button, Enter.
    a.execute("document.getElementById('press').focus()", vec![])
        .await
        .expect("focus");
    a.active_element()
        .await
        .expect("focused")
        .send_keys("\u{E007}")
        .await
        .expect("Enter");
    wait_text(&b, "counter", "2", Duration::from_secs(10)).await;
    // Loopback has no country; the list is read every 5 s.
    wait_text(&b, "countries", "unknown: 2", Duration::from_secs(15)).await;
    wait_text(&a, "countries", "unknown: 2", Duration::from_secs(15)).await;

    let shot = a.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("artifact folder");
    std::fs::write(dir.join("game-page.png"), shot).expect("screenshot saved");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_solves_the_proof_of_work_and_its_press_counts() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        service_env: button_stack::env(&[
            ("BUTTON_POW_DIFFICULTY", "12"),
            ("BUTTON_SECRET", "browser-test-secret-0123"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&format!("{}/", stack.service_url(0)))
        .await
        .expect("page loads");
    wait_text(&page, "counter", "0", Duration::from_secs(10)).await;
    page.find(Locator::Id("press"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_text(&page, "counter", "1", Duration::from_secs(30)).await;
    assert_eq!(text(&page, "status").await, "Pressed. It counts once.");
    page.close().await.expect("close");
}
