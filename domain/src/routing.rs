//! Which provider takes a video requested with `provider: auto`.
//!
//! Pure ranking over the catalog: every enabled provider whose model supports the request is
//! quoted, and the quotes are ordered by the configured policy, cheapest first (`price`, the
//! default) or in the configured order (`order`). The API prices a request with the first;
//! the dispatcher walks the list, skipping unhealthy or busy providers and falling back to
//! the next one only when the previous never accepted the job.

use crate::catalog::{Catalog, Quote, QuoteError, QuoteRequest};
use crate::provider::ProviderKind;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RoutingPolicy {
    /// Cheapest quote first; ties in `ProviderKind::ALL` order.
    #[default]
    Price,
    /// The listed providers in this order; unlisted ones after them, cheapest first.
    Order(Vec<ProviderKind>),
}

impl RoutingPolicy {
    /// `FRAMEGATE_PROVIDER_ROUTING` = `price` (default) or `order`, with
    /// `FRAMEGATE_PROVIDER_ORDER` = a comma-separated list such as `kling,sora,veo,simulator`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let order = get("FRAMEGATE_PROVIDER_ORDER").filter(|v| !v.trim().is_empty());
        match get("FRAMEGATE_PROVIDER_ROUTING").as_deref().map(str::trim) {
            None | Some("") | Some("price") if order.is_none() => Ok(RoutingPolicy::Price),
            None | Some("") | Some("order") => {
                let order =
                    order.ok_or("FRAMEGATE_PROVIDER_ORDER: required with routing `order`")?;
                let providers = order
                    .split(',')
                    .map(|name| {
                        name.trim().parse::<ProviderKind>().map_err(|_| {
                            format!(
                                "FRAMEGATE_PROVIDER_ORDER: unknown provider {:?}; allowed: veo, sora, kling, simulator",
                                name.trim()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RoutingPolicy::Order(providers))
            }
            Some("price") => Ok(RoutingPolicy::Price),
            Some(other) => Err(format!(
                "FRAMEGATE_PROVIDER_ROUTING: expected price or order, got {other:?}"
            )),
        }
    }

    fn position(&self, provider: ProviderKind) -> usize {
        match self {
            RoutingPolicy::Price => 0,
            RoutingPolicy::Order(order) => order
                .iter()
                .position(|p| *p == provider)
                .unwrap_or(order.len()),
        }
    }
}

/// Quotes of the `enabled` providers that support `request` (its `provider` is ignored),
/// best first, and the first refusal when none does. A model name applies only to the
/// provider that has it; the others are quoted with their default model.
pub fn rank(
    catalog: &Catalog,
    policy: &RoutingPolicy,
    enabled: &[ProviderKind],
    request: &QuoteRequest<'_>,
) -> Result<Vec<Quote>, QuoteError> {
    let offers =
        |provider: ProviderKind, name: &str| catalog.models_of(provider).any(|m| m.model == name);
    // A named model narrows the choice to the providers that have it; a model none of them
    // has is a mistake to report, not a reason to pick a default model of another provider.
    if let Some(name) = request.model {
        if !enabled.iter().any(|&provider| offers(provider, name)) {
            return Err(QuoteError::UnknownModel {
                provider: None,
                model: name.to_owned(),
                allowed: ProviderKind::ALL
                    .into_iter()
                    .filter(|p| enabled.contains(p))
                    .flat_map(|p| catalog.models_of(p).map(|m| m.model.clone()))
                    .collect(),
            });
        }
    }
    let mut quotes = Vec::new();
    let mut first_error = None;
    for provider in ProviderKind::ALL {
        if !enabled.contains(&provider) || request.model.is_some_and(|m| !offers(provider, m)) {
            continue;
        }
        let attempt = QuoteRequest {
            provider,
            ..request.clone()
        };
        match catalog.quote(&attempt) {
            Ok(quote) => quotes.push(quote),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    quotes.sort_by_key(|q| (policy.position(q.provider), q.cost, q.provider));
    match (quotes.is_empty(), first_error) {
        (true, Some(error)) => Err(error),
        _ => Ok(quotes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(duration_seconds: u32, resolution: &str) -> QuoteRequest<'_> {
        QuoteRequest {
            provider: ProviderKind::Simulator,
            model: None,
            duration_seconds,
            aspect_ratio: "16:9",
            resolution,
            with_image: false,
        }
    }

    fn providers(quotes: &[Quote]) -> Vec<ProviderKind> {
        quotes.iter().map(|q| q.provider).collect()
    }

    #[test]
    fn price_puts_the_cheapest_supporting_provider_first() {
        let catalog = Catalog::defaults();
        let enabled = ProviderKind::ALL;
        // 8 s at 720p: kling offers 5/10 s only, so it is out; sora (10/s) beats veo (40/s).
        let quotes = rank(
            &catalog,
            &RoutingPolicy::Price,
            &enabled,
            &request(8, "720p"),
        )
        .expect("quotes");
        assert_eq!(
            providers(&quotes),
            [
                ProviderKind::Simulator,
                ProviderKind::Sora,
                ProviderKind::Veo
            ]
        );
        assert!(quotes.windows(2).all(|w| w[0].cost <= w[1].cost));
    }

    #[test]
    fn order_follows_the_configured_list_then_price() {
        let catalog = Catalog::defaults();
        let policy = RoutingPolicy::Order(vec![ProviderKind::Veo]);
        let quotes =
            rank(&catalog, &policy, &ProviderKind::ALL, &request(8, "720p")).expect("quotes");
        assert_eq!(
            providers(&quotes),
            [
                ProviderKind::Veo,
                ProviderKind::Simulator,
                ProviderKind::Sora
            ]
        );
    }

    #[test]
    fn only_enabled_providers_are_ranked_and_a_refusal_names_why() {
        let catalog = Catalog::defaults();
        let quotes = rank(
            &catalog,
            &RoutingPolicy::Price,
            &[ProviderKind::Kling],
            &request(5, "720p"),
        )
        .expect("quotes");
        assert_eq!(providers(&quotes), [ProviderKind::Kling]);
        let error = rank(
            &catalog,
            &RoutingPolicy::Price,
            &[ProviderKind::Kling],
            &request(7, "720p"),
        )
        .expect_err("kling has no 7 s");
        assert!(
            matches!(error, QuoteError::UnsupportedDuration { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_named_model_is_routed_to_its_provider_and_an_unknown_one_is_refused() {
        let catalog = Catalog::defaults();
        let all = ProviderKind::ALL;
        let sora = QuoteRequest {
            model: Some("sora-2"),
            ..request(4, "720p")
        };
        let quotes = rank(&catalog, &RoutingPolicy::Price, &all, &sora).expect("quotes");
        assert_eq!(providers(&quotes), [ProviderKind::Sora]);

        let unknown = QuoteRequest {
            model: Some("no-such-model"),
            ..request(4, "720p")
        };
        let error =
            rank(&catalog, &RoutingPolicy::Price, &all, &unknown).expect_err("no provider has it");
        assert_eq!(error.code(), "unsupported_model");
        assert_eq!(error.field(), "model");
        // Enabled providers only: Sora's model with only the simulator enabled is unknown.
        let error = rank(
            &catalog,
            &RoutingPolicy::Price,
            &[ProviderKind::Simulator],
            &sora,
        )
        .expect_err("sora is not enabled");
        assert!(error.to_string().contains("simulator-v1"), "{error}");
    }

    #[test]
    fn the_policy_is_read_from_configuration() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            RoutingPolicy::from_lookup(get(&[])),
            Ok(RoutingPolicy::Price)
        );
        assert_eq!(
            RoutingPolicy::from_lookup(get(&[("FRAMEGATE_PROVIDER_ORDER", "kling, sora")])),
            Ok(RoutingPolicy::Order(vec![
                ProviderKind::Kling,
                ProviderKind::Sora
            ]))
        );
        assert!(
            RoutingPolicy::from_lookup(get(&[("FRAMEGATE_PROVIDER_ORDER", "kling,runway")]))
                .expect_err("unknown")
                .starts_with("FRAMEGATE_PROVIDER_ORDER")
        );
        assert!(
            RoutingPolicy::from_lookup(get(&[("FRAMEGATE_PROVIDER_ROUTING", "order")]))
                .expect_err("needs a list")
                .starts_with("FRAMEGATE_PROVIDER_ORDER")
        );
        assert!(
            RoutingPolicy::from_lookup(get(&[("FRAMEGATE_PROVIDER_ROUTING", "random")]))
                .expect_err("unknown policy")
                .starts_with("FRAMEGATE_PROVIDER_ROUTING")
        );
    }
}

/// The providers configured through `FRAMEGATE_*` keys, in `ProviderKind::ALL` order. The
/// simulator is on when no real provider is configured, or when `FRAMEGATE_SIMULATOR=on`
/// (and off with `FRAMEGATE_SIMULATOR=off`): with real keys it would otherwise win every
/// `auto` request on price.
pub fn configured_providers(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ProviderKind>, String> {
    let set = |name: &str| get(name).is_some_and(|v| !v.trim().is_empty());
    let mut providers = Vec::new();
    if set("FRAMEGATE_VEO_API_KEY") || set("FRAMEGATE_VEO_VERTEX_PROJECT") {
        providers.push(ProviderKind::Veo);
    }
    if set("FRAMEGATE_SORA_API_KEY") {
        providers.push(ProviderKind::Sora);
    }
    if set("FRAMEGATE_KLING_ACCESS_KEY") || set("FRAMEGATE_KLING_SECRET_KEY") {
        providers.push(ProviderKind::Kling);
    }
    let simulator = match get("FRAMEGATE_SIMULATOR").as_deref().map(str::trim) {
        None | Some("") | Some("auto") => providers.is_empty(),
        Some("on") | Some("true") => true,
        Some("off") | Some("false") => false,
        Some(other) => {
            return Err(format!(
                "FRAMEGATE_SIMULATOR: expected auto, on or off, got {other:?}"
            ))
        }
    };
    if simulator {
        providers.push(ProviderKind::Simulator);
    }
    Ok(providers)
}

#[cfg(test)]
mod configured_tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_simulator_is_the_default_only_without_real_providers() {
        assert_eq!(
            configured_providers(lookup(&[])),
            Ok(vec![ProviderKind::Simulator])
        );
        assert_eq!(
            configured_providers(lookup(&[("FRAMEGATE_SORA_API_KEY", "sk-x")])),
            Ok(vec![ProviderKind::Sora])
        );
        assert_eq!(
            configured_providers(lookup(&[
                ("FRAMEGATE_KLING_ACCESS_KEY", "a"),
                ("FRAMEGATE_KLING_SECRET_KEY", "s"),
                ("FRAMEGATE_SIMULATOR", "on"),
            ])),
            Ok(vec![ProviderKind::Kling, ProviderKind::Simulator])
        );
        assert_eq!(
            configured_providers(lookup(&[("FRAMEGATE_SIMULATOR", "off")])),
            Ok(vec![])
        );
        assert!(configured_providers(lookup(&[("FRAMEGATE_SIMULATOR", "maybe")])).is_err());
    }
}
