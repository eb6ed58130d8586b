//! Initialisers and `Constant` values: a `TensorProto` read into float32
//! data (the only float type Lockstep computes in) or int64 data (shapes,
//! axes and indices, used by the importer itself).

use lockstep_limits::{MAX_RANK, MAX_TENSOR_ELEMENTS};

use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::TensorProto;

/// A constant's data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant with its shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Constant {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Constant {
    pub(crate) fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }
}

/// Reads `t`. The error is the reason alone; the caller names the tensor.
pub(crate) fn read(t: &TensorProto) -> Result<Constant, String> {
    if t.data_location() == DataLocation::External || !t.external_data.is_empty() {
        return Err("its data is in an external file; save the model with \
                    onnx.save_model(model, path, save_as_external_data=False)"
            .into());
    }
    let shape = dims(&t.dims)?;
    let count: usize = shape.iter().product();
    let raw = t.raw_data.as_deref();
    let data = match DataType::try_from(t.data_type()).ok() {
        Some(DataType::Float) => Data::F32(match raw {
            Some(raw) => {
                check_raw(raw, count, 4)?;
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            None => t.float_data.clone(),
        }),
        Some(DataType::Int64) => Data::I64(match raw {
            Some(raw) => {
                check_raw(raw, count, 8)?;
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                    .collect()
            }
            None => t.int64_data.clone(),
        }),
        // A mask: read as float32 1.0 and 0.0, the values `where` tests.
        Some(DataType::Bool) => Data::F32(match raw {
            Some(raw) => {
                check_raw(raw, count, 1)?;
                raw.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 }).collect()
            }
            None => t
                .int32_data
                .iter()
                .map(|&b| if b != 0 { 1.0 } else { 0.0 })
                .collect(),
        }),
        Some(other) => {
            return Err(format!(
                "dtype {} is not supported (float32 only; int64 for shapes and indices, bool for masks)",
                other.as_str_name()
            ))
        }
        None => return Err(format!("unknown dtype {}", t.data_type())),
    };
    let c = Constant { shape, data };
    if c.len() != count {
        return Err(format!(
            "it holds {} values but its shape {:?} needs {count}",
            c.len(),
            c.shape
        ));
    }
    Ok(c)
}

/// ONNX dims (int64) as a Lockstep shape, within Lockstep's bounds.
pub(crate) fn dims(raw: &[i64]) -> Result<Vec<usize>, String> {
    if raw.len() > MAX_RANK {
        return Err(format!(
            "rank {} is over Lockstep's bound of {MAX_RANK}",
            raw.len()
        ));
    }
    let mut count: usize = 1;
    let mut shape = Vec::with_capacity(raw.len());
    for &d in raw {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| format!("over Lockstep's bound of {MAX_TENSOR_ELEMENTS} elements"))?;
        shape.push(d);
    }
    Ok(shape)
}

fn check_raw(raw: &[u8], count: usize, width: usize) -> Result<(), String> {
    if raw.len() != count * width {
        return Err(format!(
            "raw_data is {} bytes but its shape needs {} ({count} values of {width} bytes)",
            raw.len(),
            count * width
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: DataType, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            dims,
            data_type: Some(dtype as i32),
            ..Default::default()
        }
    }

    #[test]
    fn float_from_raw_and_from_float_data_agree() {
        let mut a = tensor(DataType::Float, vec![2]);
        a.raw_data = Some(
            [1.5f32, -0.0]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect(),
        );
        let mut b = tensor(DataType::Float, vec![2]);
        b.float_data = vec![1.5, -0.0];
        assert_eq!(read(&a).unwrap(), read(&b).unwrap());
        assert_eq!(read(&a).unwrap().shape, vec![2]);
    }

    #[test]
    fn bool_masks_are_read_as_one_and_zero() {
        let mut t = tensor(DataType::Bool, vec![3]);
        t.raw_data = Some(vec![1, 0, 7]);
        assert_eq!(read(&t).unwrap().data, Data::F32(vec![1.0, 0.0, 1.0]));
        let mut t = tensor(DataType::Bool, vec![2]);
        t.int32_data = vec![0, 1];
        assert_eq!(read(&t).unwrap().data, Data::F32(vec![0.0, 1.0]));
    }

    #[test]
    fn int64_shapes_are_read() {
        let mut t = tensor(DataType::Int64, vec![2]);
        t.raw_data = Some([4i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(read(&t).unwrap().data, Data::I64(vec![4, -1]));
    }

    #[test]
    fn wrong_lengths_dtypes_and_external_data_are_refused() {
        let mut short = tensor(DataType::Float, vec![3]);
        short.raw_data = Some(vec![0; 8]);
        assert!(read(&short).unwrap_err().contains("raw_data is 8 bytes"));
        let mut few = tensor(DataType::Float, vec![3]);
        few.float_data = vec![1.0];
        assert!(read(&few).unwrap_err().contains("holds 1 values"));
        let double = tensor(DataType::Double, vec![1]);
        assert!(read(&double).unwrap_err().contains("DOUBLE"));
        let mut ext = tensor(DataType::Float, vec![1]);
        ext.data_location = Some(DataLocation::External as i32);
        assert!(read(&ext).unwrap_err().contains("external"));
        assert!(dims(&[-1]).unwrap_err().contains("negative"));
        assert!(dims(&[1 << 20, 1 << 20]).unwrap_err().contains("bound"));
        assert!(dims(&[1; 9]).unwrap_err().contains("rank 9"));
    }
}
