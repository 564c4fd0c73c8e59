//! The filter configuration (DESIGN.md "Filter configuration").
