//! The credit queries the API uses, in one place: an account's figures
//! (`credit_accounts`) and its statement (`credit_ledger`). The tables and their projectors
//! live in their own modules; this one only gathers what readers need.

pub use super::credit_accounts::{account, CreditAccountRow};
pub use super::credit_ledger::{ledger, LedgerEntry};
