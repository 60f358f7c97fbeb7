//! Email addresses as accounts know them: one normalised form per address.

use super::UserError;

/// RFC 5321 limits a forward path to 256 octets including the angle brackets.
pub const MAX_EMAIL_LEN: usize = 254;

/// Trims and lowercases an address and checks it has a plausible shape. Deliverability is
/// proven by the verification email, so this only rejects what can never be an address and
/// makes `A@X.com` and `a@x.com` one account.
pub fn normalize_email(email: &str) -> Result<String, UserError> {
    let email = email.trim().to_lowercase();
    if email.len() > MAX_EMAIL_LEN || email.chars().any(char::is_whitespace) {
        return Err(UserError::InvalidEmail);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(UserError::InvalidEmail);
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty() || domain.contains('@') || !domain_ok {
        return Err(UserError::InvalidEmail);
    }
    Ok(email)
}
