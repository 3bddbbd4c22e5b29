pub mod fields;
pub mod labels;
