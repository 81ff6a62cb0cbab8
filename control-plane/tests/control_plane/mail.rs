//! The welcome e-mail without SMTP: rendered and written into the outbox.

use std::path::{Path, PathBuf};

use rackhand_control_plane::config::HandoffConfig;
use rackhand_control_plane::mail::{Delivery, Mailer, WelcomeEmail};

const PASSWORD: &str = "Xq7-welcome-pw-31d9";
const MESSAGE_ID: &str = "<order-7.handoff.3f2a@rackhand.test>";

fn handoff_config(outbox_dir: &Path, template_file: Option<PathBuf>) -> HandoffConfig {
    HandoffConfig {
        from: "Rackhand <rackhand@localhost>".to_string(),
        subject: "Your server {{hostname}} is ready".to_string(),
        template_file,
        outbox_dir: outbox_dir.to_path_buf(),
    }
}

fn welcome() -> WelcomeEmail<'static> {
    WelcomeEmail {
        hostname: "srv-7",
        fqdn: "srv-7.servers.example.net",
        ipv4: "192.0.2.10",
        username: "root",
        password: PASSWORD,
    }
}

#[tokio::test]
async fn welcome_email_lands_in_outbox() {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let outbox = dir.path().join("outbox");
    let mailer =
        Mailer::new(&handoff_config(&outbox, None), None).expect("the default templates compile");
    let expected_path = mailer.outbox_path(MESSAGE_ID);
    assert!(!mailer.in_outbox(MESSAGE_ID));

    let delivery = mailer
        .send("customer@example.com", MESSAGE_ID, &welcome())
        .await
        .expect("the outbox is writable");

    let Delivery::Outbox { path } = delivery else {
        panic!("a mailer without SMTP delivers to the outbox, got {delivery:?}");
    };
    assert_eq!(path, expected_path);
    assert_eq!(path.parent(), Some(outbox.as_path()));
    let message = std::fs::read_to_string(&path).expect("the .eml file is readable");
    assert!(message.contains(PASSWORD), "{message}");
    assert!(message.contains("srv-7.servers.example.net"), "{message}");
    assert!(
        message.contains("Subject: Your server srv-7 is ready"),
        "{message}"
    );
    assert!(mailer.in_outbox(MESSAGE_ID));
}

#[tokio::test]
async fn unknown_template_variable_fails_at_start() {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let template = dir.path().join("welcome.hbs");
    std::fs::write(
        &template,
        "Hello {{customer_name}}, your password is {{password}}.\n",
    )
    .expect("the template file is writable");

    let error = Mailer::new(
        &handoff_config(&dir.path().join("outbox"), Some(template)),
        None,
    )
    .expect_err("a template naming an unknown variable is rejected at start");

    let message = format!("{error:#}");
    assert!(message.contains("customer_name"), "{message}");
    assert!(message.contains("template"), "{message}");
}

#[tokio::test]
async fn unknown_subject_variable_fails_at_start() {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let mut config = handoff_config(&dir.path().join("outbox"), None);
    config.subject = "Order {{order_number}} is ready".to_string();

    let error =
        Mailer::new(&config, None).expect_err("a subject naming an unknown variable is rejected");

    let message = format!("{error:#}");
    assert!(message.contains("order_number"), "{message}");
}

#[tokio::test]
async fn template_syntax_error_fails_at_start() {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let template = dir.path().join("welcome.hbs");
    std::fs::write(&template, "Hello {{#if hostname}}unclosed\n")
        .expect("the template file is writable");

    let error = Mailer::new(
        &handoff_config(&dir.path().join("outbox"), Some(template)),
        None,
    )
    .expect_err("a template with a syntax error is rejected");

    let message = format!("{error:#}");
    assert!(message.contains("template"), "{message}");
}

#[tokio::test]
async fn log_helper_in_template_fails_at_start() {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let template = dir.path().join("welcome.hbs");
    std::fs::write(&template, "{{log password}}Your server is ready.\n")
        .expect("the template file is writable");

    let error = Mailer::new(
        &handoff_config(&dir.path().join("outbox"), Some(template)),
        None,
    )
    .expect_err("the log helper would write the password to the log");

    let message = format!("{error:#}");
    assert!(message.contains("log"), "{message}");
}
