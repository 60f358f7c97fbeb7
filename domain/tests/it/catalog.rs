//! The provider catalog: capabilities and prices.

use framegate_domain::catalog::{Catalog, QuoteError, QuoteRequest};
use framegate_domain::{Credits, ProviderKind};

fn request(
    provider: ProviderKind,
    model: Option<&str>,
    seconds: u32,
    aspect: &'static str,
    resolution: &'static str,
) -> QuoteRequest<'static> {
    let model: Option<&'static str> = model.map(|m| &*Box::leak(m.to_owned().into_boxed_str()));
    QuoteRequest {
        provider,
        model,
        duration_seconds: seconds,
        aspect_ratio: aspect,
        resolution,
        with_image: false,
    }
}

#[test]
fn a_quote_is_the_per_second_price_times_the_duration() {
    let catalog = Catalog::defaults();
    let quote = catalog
        .quote(&request(ProviderKind::Sora, None, 8, "16:9", "720p"))
        .expect("quote");
    assert_eq!(
        (quote.model.as_str(), quote.cost),
        ("sora-2", Credits::new(80))
    );
    let veo = catalog
        .quote(&request(
            ProviderKind::Veo,
            Some("veo-3.1-fast-generate-001"),
            6,
            "9:16",
            "720p",
        ))
        .expect("quote");
    assert_eq!(veo.cost, Credits::new(90));
    let sim = catalog
        .quote(&request(ProviderKind::Simulator, None, 3, "1:1", "480p"))
        .expect("quote");
    assert_eq!(sim.cost, Credits::new(3));
}

#[test]
fn a_resolution_can_carry_its_own_price() {
    let catalog = Catalog::defaults();
    let pro = |res| {
        catalog
            .quote(&request(
                ProviderKind::Sora,
                Some("sora-2-pro"),
                4,
                "9:16",
                res,
            ))
            .expect("quote")
            .cost
    };
    assert_eq!(pro("720p"), Credits::new(120));
    assert_eq!(pro("1080p"), Credits::new(200));
}

#[test]
fn unsupported_values_are_refused_naming_the_field_and_the_allowed_values() {
    let catalog = Catalog::defaults();
    let error = catalog
        .quote(&request(ProviderKind::Sora, None, 5, "16:9", "720p"))
        .expect_err("5 s");
    assert_eq!(
        error,
        QuoteError::UnsupportedDuration {
            model: "sora-2".into(),
            allowed: vec![4, 8, 12]
        }
    );
    assert_eq!(
        (error.field(), error.code()),
        ("duration_seconds", "unsupported_duration")
    );
    assert!(error.to_string().contains("4, 8, 12"));

    let error = catalog
        .quote(&request(ProviderKind::Kling, None, 5, "4:3", "720p"))
        .expect_err("4:3");
    assert_eq!(error.field(), "aspect_ratio");
    let error = catalog
        .quote(&request(
            ProviderKind::Sora,
            Some("sora-3"),
            4,
            "16:9",
            "720p",
        ))
        .expect_err("model");
    assert_eq!(error.code(), "unsupported_model");
    assert!(error.to_string().contains("sora-2-pro"));
}

#[test]
fn veo_renders_1080p_and_4k_only_at_eight_seconds() {
    let catalog = Catalog::defaults();
    let short = catalog
        .quote(&request(ProviderKind::Veo, None, 6, "16:9", "1080p"))
        .expect_err("6 s at 1080p");
    assert_eq!(short.field(), "resolution");
    let long = catalog
        .quote(&request(ProviderKind::Veo, None, 8, "16:9", "1080p"))
        .expect("8 s at 1080p");
    assert_eq!(long.cost, Credits::new(320));
}

#[test]
fn every_provider_has_exactly_one_default_model_with_positive_prices() {
    let catalog = Catalog::defaults();
    for provider in ProviderKind::ALL {
        let defaults = catalog.models_of(provider).filter(|m| m.default).count();
        assert_eq!(defaults, 1, "{provider}");
        assert!(catalog.provider(provider).is_some());
        assert!(catalog
            .models_of(provider)
            .all(|m| m.credits_per_second > 0));
    }
    assert!(catalog
        .provider(ProviderKind::Sora)
        .is_some_and(|p| p.upstream_status.contains("2026-09-24")));
}

#[test]
fn a_catalog_file_overrides_prices() {
    let mut json = serde_json::to_value(Catalog::defaults()).expect("json");
    for model in json["models"].as_array_mut().expect("models") {
        if model["model"] == "sora-2" {
            model["credits_per_second"] = 12.into();
        }
    }
    let catalog = Catalog::from_json(&json.to_string()).expect("parse");
    let quote = catalog
        .quote(&request(ProviderKind::Sora, None, 4, "16:9", "720p"))
        .expect("quote");
    assert_eq!(quote.cost, Credits::new(48));
    assert!(Catalog::from_json("{\"models\": 3}").is_err());
}
