//! The HTTP surface. [`crate::app`] wires these handlers into a router.

pub mod health;
pub mod press;
pub mod states;
pub mod web;
