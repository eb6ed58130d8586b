//! A node's inputs, outputs and attributes, read strictly: a missing
//! input, an attribute of the wrong type or one the lowering does not know
//! is a reason to refuse the node.

use crate::lower::Why;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, NodeProto};

pub(crate) fn input(node: &NodeProto, i: usize) -> Result<&str, Why> {
    match node.input.get(i).map(String::as_str) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(format!("input {i} is missing")),
    }
}

pub(crate) fn output(node: &NodeProto, i: usize) -> Result<&str, Why> {
    match node.output.get(i).map(String::as_str) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(format!("output {i} is missing")),
    }
}

pub(crate) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub(crate) fn attrs_known(node: &NodeProto, known: &[&str]) -> Result<(), Why> {
    for a in &node.attribute {
        if !known.contains(&a.name()) {
            return Err(format!("attribute '{}' is not supported", a.name()));
        }
        if !a.ref_attr_name().is_empty() {
            return Err(format!(
                "attribute '{}' refers to a function attribute",
                a.name()
            ));
        }
    }
    Ok(())
}

pub(crate) fn typed<'a>(
    node: &'a NodeProto,
    name: &str,
    ty: AttributeType,
) -> Result<Option<&'a AttributeProto>, Why> {
    match attr(node, name) {
        None => Ok(None),
        // Writers before IR 3 left `type` unset.
        Some(a) if a.r#type() == ty || a.r#type() == AttributeType::Undefined => Ok(Some(a)),
        Some(a) => Err(format!(
            "attribute '{name}' is {}, not {}",
            a.r#type().as_str_name(),
            ty.as_str_name()
        )),
    }
}

pub(crate) fn attr_f(node: &NodeProto, name: &str) -> Result<Option<f32>, Why> {
    Ok(typed(node, name, AttributeType::Float)?.map(|a| a.f()))
}

pub(crate) fn attr_i(node: &NodeProto, name: &str) -> Result<Option<i64>, Why> {
    Ok(typed(node, name, AttributeType::Int)?.map(|a| a.i()))
}

pub(crate) fn attr_ints(node: &NodeProto, name: &str) -> Result<Option<Vec<i64>>, Why> {
    Ok(typed(node, name, AttributeType::Ints)?.map(|a| a.ints.clone()))
}

pub(crate) fn attr_s(node: &NodeProto, name: &str) -> Result<Option<String>, Why> {
    typed(node, name, AttributeType::String)?
        .map(|a| {
            String::from_utf8(a.s().to_vec())
                .map_err(|_| format!("attribute '{name}' is not UTF-8"))
        })
        .transpose()
}
