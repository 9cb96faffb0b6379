//! The OTLP form of the metrics: one `ExportMetricsServiceRequest` per collection,
//! cumulative, exemplars of traces tail sampling dropped left out.

use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue as ProtoKeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar as ProtoExemplar, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::aggregate::{AttrValue, Attributes, Instrument, Kind, PointData};
use super::registry::{Metrics, Observation};

impl Attributes {
    /// The set as OTLP key-values.
    pub(super) fn to_proto(&self) -> Vec<ProtoKeyValue> {
        self.0
            .iter()
            .map(|(key, value)| ProtoKeyValue {
                key: key.to_string(),
                value: Some(AnyValue {
                    value: Some(match value {
                        AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
                        AttrValue::Int(i) => any_value::Value::IntValue(*i),
                        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
                        AttrValue::Double(bits) => {
                            any_value::Value::DoubleValue(f64::from_bits(*bits))
                        }
                    }),
                }),
                ..Default::default()
            })
            .collect()
    }
}

impl Instrument {
    /// Its points as one OTLP metric.
    pub(super) fn collect(&self, start: u64, now: u64, keep: &dyn Fn(&[u8; 16]) -> bool) -> Metric {
        let points = self.points.read().unwrap_or_else(|e| e.into_inner());
        let exemplars = |data: &PointData| -> Vec<ProtoExemplar> {
            data.exemplars
                .iter()
                .flatten()
                .filter(|e| keep(&e.trace_id))
                .map(|e| ProtoExemplar {
                    time_unix_nano: unix_nanos(e.time),
                    span_id: e.span_id.to_vec(),
                    trace_id: e.trace_id.to_vec(),
                    value: Some(exemplar::Value::AsDouble(e.value)),
                    ..Default::default()
                })
                .collect()
        };
        let data = match self.kind {
            Kind::Counter => metric::Data::Sum(Sum {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
                data_points: points
                    .iter()
                    .map(|(attributes, point)| {
                        let data = point.data.lock().unwrap_or_else(|e| e.into_inner());
                        NumberDataPoint {
                            attributes: attributes.to_proto(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            exemplars: exemplars(&data),
                            value: Some(number_data_point::Value::AsDouble(data.sum)),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
            Kind::Histogram(bounds) => metric::Data::Histogram(Histogram {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                data_points: points
                    .iter()
                    .map(|(attributes, point)| {
                        let data = point.data.lock().unwrap_or_else(|e| e.into_inner());
                        HistogramDataPoint {
                            attributes: attributes.to_proto(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: data.count,
                            sum: Some(data.sum),
                            bucket_counts: data.buckets.clone(),
                            explicit_bounds: bounds.to_vec(),
                            exemplars: exemplars(&data),
                            min: (data.count > 0).then_some(data.min),
                            max: (data.count > 0).then_some(data.max),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
        };
        Metric {
            name: self.name.to_string(),
            description: self.description.to_string(),
            unit: self.unit.to_string(),
            data: Some(data),
            ..Default::default()
        }
    }
}

impl Metrics {
    /// Everything so far as one OTLP request. Exemplars whose trace `keep` refuses (tail
    /// sampling dropped it, or has not decided yet) are left out.
    pub fn collect(
        &self,
        resource: Resource,
        host_scope: &str,
        keep: &dyn Fn(&[u8; 16]) -> bool,
    ) -> ExportMetricsServiceRequest {
        let start = unix_nanos(self.start);
        let now = unix_nanos(SystemTime::now());
        let scope = |name: &str| {
            Some(InstrumentationScope {
                name: name.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            })
        };
        let mut host_metrics: Vec<Metric> = self
            .host
            .all()
            .into_iter()
            .filter(|i| !i.is_empty())
            .map(|i| i.collect(start, now, keep))
            .collect();

        let mut observed = Vec::new();
        for observer in self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            observer(&mut observed);
        }
        let mut by_name: Vec<(&Observation, Vec<NumberDataPoint>)> = Vec::new();
        for observation in &observed {
            let point = NumberDataPoint {
                attributes: observation.attributes.to_proto(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(observation.value as i64)),
                ..Default::default()
            };
            match by_name.iter_mut().find(|(o, _)| o.name == observation.name) {
                Some((_, points)) => points.push(point),
                None => by_name.push((observation, vec![point])),
            }
        }
        host_metrics.extend(by_name.into_iter().map(|(o, points)| Metric {
            name: o.name.to_owned(),
            description: o.description.to_owned(),
            unit: o.unit.to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }));

        let mut scopes = vec![ScopeMetrics {
            scope: scope(host_scope),
            metrics: host_metrics,
            ..Default::default()
        }];
        for (component, instruments) in self.guests.read().unwrap_or_else(|e| e.into_inner()).iter()
        {
            scopes.push(ScopeMetrics {
                scope: scope(component),
                metrics: instruments
                    .iter()
                    .map(|i| i.collect(start, now, keep))
                    .collect(),
                ..Default::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource),
                scope_metrics: scopes,
                ..Default::default()
            }],
        }
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
