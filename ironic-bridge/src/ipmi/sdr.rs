//! Sensor readings: the SDR repository walk, Get Sensor Reading, and the
//! conversion of raw readings with the SDR's linearization formula.

use rackhand_protocol::hardware::{Health, SensorKind, SensorReading, Sensors};

use super::session::{Session, net_fn};
use crate::driver::DriverError;

/// Maximum records read from one repository, so a BMC whose "next record
/// id" chain loops cannot keep the walk going forever.
const MAX_RECORDS: usize = 1024;
/// Bytes read per Get SDR call after the header; many BMCs reject larger
/// partial reads.
const READ_CHUNK: u8 = 16;

/// A threshold sensor from a Full Sensor Record (SDR type 0x01).
#[derive(Debug, Clone, PartialEq)]
pub struct FullSensor {
    pub owner: u8,
    pub lun: u8,
    pub number: u8,
    pub sensor_type: u8,
    pub name: String,
    pub base_unit: u8,
    pub analog_format: u8,
    pub linearization: u8,
    pub m: i16,
    pub b: i16,
    pub r_exp: i8,
    pub b_exp: i8,
}

fn signed(value: u16, bits: u32) -> i16 {
    let shift = 16 - bits;
    ((value << shift) as i16) >> shift
}

impl FullSensor {
    /// Parses a whole record (header included). `Ok(None)` for records that
    /// are not threshold sensors in a Full Sensor Record.
    pub fn parse(record: &[u8]) -> Result<Option<FullSensor>, String> {
        if record.len() < 5 {
            return Err(format!("SDR of {} bytes has no header", record.len()));
        }
        if record[3] != 0x01 {
            return Ok(None);
        }
        if record.len() < 48 {
            return Err(format!("full sensor record of {} bytes", record.len()));
        }
        if record[13] != 0x01 {
            // Discrete sensors have states, not readings.
            return Ok(None);
        }
        let name_len = usize::from(record[47] & 0x1F);
        let name_end = (48 + name_len).min(record.len());
        let name = String::from_utf8_lossy(&record[48..name_end])
            .trim_end_matches('\0')
            .to_string();

        Ok(Some(FullSensor {
            owner: record[5],
            lun: record[6] & 0x03,
            number: record[7],
            sensor_type: record[12],
            name,
            base_unit: record[21],
            analog_format: record[20] >> 6,
            linearization: record[23] & 0x7F,
            m: signed(
                u16::from(record[24]) | (u16::from(record[25] & 0xC0) << 2),
                10,
            ),
            b: signed(
                u16::from(record[26]) | (u16::from(record[27] & 0xC0) << 2),
                10,
            ),
            r_exp: signed(u16::from(record[29] >> 4), 4) as i8,
            b_exp: signed(u16::from(record[29] & 0x0F), 4) as i8,
        }))
    }

    /// Converts a raw reading: y = L[(M x + B 10^Bexp) 10^Rexp]. `None` when
    /// the sensor has no analog reading or an OEM linearization.
    pub fn convert(&self, raw: u8) -> Option<f64> {
        let x = match self.analog_format {
            0 => f64::from(raw),
            1 => {
                // One's complement.
                if raw & 0x80 != 0 {
                    -f64::from(!raw)
                } else {
                    f64::from(raw)
                }
            }
            2 => f64::from(raw as i8),
            _ => return None,
        };
        let value = (f64::from(self.m) * x + f64::from(self.b) * 10f64.powi(self.b_exp.into()))
            * 10f64.powi(self.r_exp.into());
        let value = match self.linearization {
            0 => value,
            1 => value.ln(),
            2 => value.log10(),
            3 => value.log2(),
            4 => value.exp(),
            5 => 10f64.powf(value),
            6 => value.exp2(),
            7 => 1.0 / value,
            8 => value * value,
            9 => value * value * value,
            10 => value.sqrt(),
            11 => value.cbrt(),
            _ => return None,
        };
        value.is_finite().then_some(value)
    }

    pub fn kind(&self) -> SensorKind {
        match self.sensor_type {
            0x01 => SensorKind::Temperature,
            0x02 => SensorKind::Voltage,
            0x03 => SensorKind::Current,
            0x04 => SensorKind::Fan,
            0x08 => SensorKind::Other("power supply".to_string()),
            other => SensorKind::Other(format!("sensor type {other:#04x}")),
        }
    }

    /// Returns the unit: UCUM where it exists, `RPM` as BMCs show it.
    pub fn unit(&self) -> Option<String> {
        let unit = match self.base_unit {
            1 => "Cel",
            2 => "[degF]",
            3 => "K",
            4 => "V",
            5 => "A",
            6 => "W",
            18 => "RPM",
            19 => "Hz",
            _ => return None,
        };
        Some(unit.to_string())
    }
}

/// Grades the threshold status byte of Get Sensor Reading: critical or
/// non-recoverable bits are critical, non-critical bits a warning.
pub fn health_from_status(status: u8) -> Health {
    if status & 0b0011_0110 != 0 {
        Health::Critical
    } else if status & 0b0000_1001 != 0 {
        Health::Warning
    } else {
        Health::Ok
    }
}

/// The machine's health: the worst reading, or unknown with none graded.
pub fn rollup(readings: &[SensorReading]) -> Health {
    let graded = readings.iter().map(|reading| reading.health);
    if graded.clone().any(|health| health == Health::Critical) {
        Health::Critical
    } else if graded.clone().any(|health| health == Health::Warning) {
        Health::Warning
    } else if graded.clone().any(|health| health == Health::Ok) {
        Health::Ok
    } else {
        Health::Unknown
    }
}

/// Reads every threshold sensor the BMC owns.
pub async fn read_sensors(session: &mut Session) -> Result<Sensors, DriverError> {
    let records = walk_repository(session).await?;
    let mut readings = Vec::new();
    for record in records {
        let sensor = match FullSensor::parse(&record) {
            Ok(Some(sensor)) => sensor,
            Ok(None) => continue,
            Err(problem) => return Err(session.target.invalid("Get SDR", problem)),
        };
        if sensor.owner != 0x20 {
            // TODO: read sensors of other controllers through IPMB bridging
            // (Send Message); they are skipped.
            tracing::debug!(node_id = %session.target.node, sensor = %sensor.name, owner = sensor.owner, "ipmi skipping sensor behind another controller");
            continue;
        }
        readings.push(read_one(session, &sensor).await?);
    }
    Ok(Sensors {
        health: rollup(&readings),
        readings,
    })
}

async fn read_one(
    session: &mut Session,
    sensor: &FullSensor,
) -> Result<SensorReading, DriverError> {
    let name = format!("Get Sensor Reading ({})", sensor.name);
    let data = session
        .request(net_fn::SENSOR, 0x2D, &[sensor.number], &name)
        .await;
    let data = match data {
        Ok(data) => data,
        // Not present: an absent device has no reading.
        Err(DriverError::IpmiCommand { code: 0xCB, .. }) => Vec::new(),
        Err(error) => return Err(error),
    };

    // Byte 2, bit 5: reading unavailable; bit 6: scanning disabled.
    let available = data.len() >= 2 && data[1] & 0x20 == 0 && data[1] & 0x40 != 0;
    let value = if available {
        sensor.convert(data[0])
    } else {
        None
    };
    let health = match (available, data.get(2)) {
        (true, Some(status)) => health_from_status(*status),
        _ => Health::Unknown,
    };
    Ok(SensorReading {
        name: sensor.name.clone(),
        kind: sensor.kind(),
        value,
        unit: sensor.unit(),
        health,
    })
}

/// Reads every record of the SDR repository, following the next-record-id
/// chain from record 0 until 0xFFFF.
async fn walk_repository(session: &mut Session) -> Result<Vec<Vec<u8>>, DriverError> {
    let reservation = session
        .request(net_fn::STORAGE, 0x22, &[], "Reserve SDR Repository")
        .await?;
    if reservation.len() < 2 {
        return Err(session
            .target
            .invalid("Reserve SDR Repository", "no reservation id"));
    }
    let reservation = [reservation[0], reservation[1]];

    let mut records = Vec::new();
    let mut record_id = 0u16;
    for _ in 0..MAX_RECORDS {
        let (next, record) = read_record(session, reservation, record_id).await?;
        records.push(record);
        if next == 0xFFFF {
            return Ok(records);
        }
        record_id = next;
    }
    Err(session.target.invalid(
        "Get SDR",
        format!("more than {MAX_RECORDS} records; the next-record chain may loop"),
    ))
}

/// Reads one record in pieces: the 5-byte header, then the body.
async fn read_record(
    session: &mut Session,
    reservation: [u8; 2],
    record_id: u16,
) -> Result<(u16, Vec<u8>), DriverError> {
    const COMMAND: &str = "Get SDR";
    let id = record_id.to_le_bytes();
    let read = async |session: &mut Session, offset: u8, count: u8| {
        let request = [reservation[0], reservation[1], id[0], id[1], offset, count];
        let data = session
            .request(net_fn::STORAGE, 0x23, &request, COMMAND)
            .await?;
        if data.len() < 2 {
            return Err(session.target.invalid(COMMAND, "no next record id"));
        }
        Ok((u16::from_le_bytes([data[0], data[1]]), data[2..].to_vec()))
    };

    let (next, mut record) = read(session, 0, 5).await?;
    if record.len() < 5 {
        let problem = format!("record {record_id} header of {} bytes", record.len());
        return Err(session.target.invalid(COMMAND, problem));
    }
    let total = 5 + usize::from(record[4]);
    while record.len() < total {
        let offset = record.len() as u8;
        let count = READ_CHUNK.min((total - record.len()) as u8);
        let (_, piece) = read(session, offset, count).await?;
        if piece.is_empty() {
            let problem = format!(
                "record {record_id} ended at {} of {total} bytes",
                record.len()
            );
            return Err(session.target.invalid(COMMAND, problem));
        }
        record.extend_from_slice(&piece);
    }
    record.truncate(total);
    Ok((next, record))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rackhand_protocol::hardware::Health;

    use super::{FullSensor, health_from_status};

    /// A Full Sensor Record as the ipmi-bmc peer defines its 12 V sensor:
    /// M 5, B 100, B exponent 0, R exponent -2.
    fn voltage_record() -> Vec<u8> {
        let mut record = vec![0u8; 48];
        record[2] = 0x51;
        record[3] = 0x01;
        record[5] = 0x20;
        record[7] = 3;
        record[12] = 0x02;
        record[13] = 0x01;
        record[21] = 4;
        record[24] = 5;
        record[26] = 100;
        record[29] = 0xE0;
        record[47] = 0xC3;
        record.extend_from_slice(b"12V");
        record[4] = (record.len() - 5) as u8;
        record
    }

    #[test]
    fn voltage_sensor_applies_m_b_and_exponent() {
        let sensor = FullSensor::parse(&voltage_record())
            .expect("valid")
            .expect("threshold sensor");
        assert_eq!(sensor.name, "12V");
        assert_eq!(sensor.m, 5);
        assert_eq!(sensor.b, 100);
        assert_eq!(sensor.r_exp, -2);
        let value = sensor.convert(220).expect("linear");
        assert!((value - 12.0).abs() < 1e-9, "{value}");
        assert_eq!(sensor.unit().as_deref(), Some("V"));
    }

    #[test]
    fn negative_m_uses_ten_bit_twos_complement() {
        let mut record = voltage_record();
        record[24] = 0xFF;
        record[25] = 0xC0;
        let sensor = FullSensor::parse(&record).expect("valid").expect("sensor");
        assert_eq!(sensor.m, -1);
    }

    #[test]
    fn twos_complement_reading_is_signed() {
        let mut record = voltage_record();
        record[20] = 0x80;
        record[26] = 0;
        record[29] = 0;
        let sensor = FullSensor::parse(&record).expect("valid").expect("sensor");
        assert_eq!(sensor.convert(0xFE), Some(-10.0));
    }

    #[test]
    fn discrete_sensor_is_skipped() {
        let mut record = voltage_record();
        record[13] = 0x6F;
        assert_eq!(FullSensor::parse(&record), Ok(None));
    }

    #[test]
    fn short_full_record_is_rejected() {
        assert!(FullSensor::parse(&voltage_record()[..30]).is_err());
    }

    #[test]
    fn threshold_status_grades_health() {
        assert_eq!(health_from_status(0x00), Health::Ok);
        assert_eq!(health_from_status(0x01), Health::Warning);
        assert_eq!(health_from_status(0x08), Health::Warning);
        assert_eq!(health_from_status(0x02), Health::Critical);
        assert_eq!(health_from_status(0x20), Health::Critical);
    }

    proptest! {
        #[test]
        fn parse_and_convert_never_panic(record in proptest::collection::vec(any::<u8>(), 0..80), raw in any::<u8>()) {
            if let Ok(Some(sensor)) = FullSensor::parse(&record) {
                let _ = sensor.convert(raw);
                let _ = sensor.kind();
                let _ = sensor.unit();
            }
        }
    }
}
