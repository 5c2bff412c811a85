//! Publishes candidates straight to the submission exchange, confirmed, for
//! `scripts/bench-attachment-pipeline.sh`: the yardstick's realistic ~2.5 KB payload (`limits`'s
//! `candidate_json`: 4 educations, 7 experiences), each linking `LINKS` files (a résumé, an interview
//! feedback, then offer attachments) spread over `HOSTS`, and is stamped with its publish time as
//! its acceptance time (`received_at`). `RATE` per second (0: as fast as the broker confirms).
//! Settings (broker URL, queue prefix) come from the environment like the service's.
//!
//! ```sh
//! MOKA_INGEST_QUEUE_PREFIX=bench cargo run --release --example publish_candidates -- 20000 2 127.0.0.1:18101 0 run1
//! ```

use std::time::Duration;

use chrono::Utc;
use moka_ingest::{
    broker::{
        self,
        envelope::Meta,
        topology::{Topology, SUBMISSION_KEY},
    },
    config::Settings,
};
use serde_json::json;

/// The yardstick's realistic candidate (see `../shared/tools/limits/src/main.rs`), without links.
fn candidate(id: &str, i: usize) -> serde_json::Value {
    const NAMES: [&str; 6] = ["张三", "李四", "王五", "赵六", "陈晓明", "欧阳娜娜"];
    let job = |s: &str, e: &str, c: &str, t: &str, d: &str| json!({"startDate": s, "endDate": e, "company": c, "title": t, "description": d});
    json!({
        "id": id,
        "name": NAMES[i % NAMES.len()],
        "phone": format!("132{:08}", i % 100_000_000),
        "email": format!("candidate{i}@example.com"),
        "gender": if i.is_multiple_of(2) { "男" } else { "女" },
        "birthYear": 1980 + (i % 20),
        "source": "拉勾网",
        "academicDegree": "本科",
        "married": "未婚",
        "educationInfo": [
            {"startDate": "2004-09", "endDate": "2007-07", "school": "北京市第四中学", "speciality": "理科实验班", "academicDegree": "高中"},
            {"startDate": "2007-09", "endDate": "2011-09", "school": "北京大学", "speciality": "数学与应用数学", "academicDegree": "理学学士"},
            {"startDate": "2011-09", "endDate": "2014-07", "school": "清华大学", "speciality": "计算机科学与技术", "academicDegree": "工学硕士"},
            {"startDate": "2014-09", "endDate": "2015-06", "school": "中国科学院大学", "speciality": "软件工程（访问学者）", "academicDegree": "无"}
        ],
        "experienceInfo": [
            job("2010-07", "2011-08", "百度在线网络技术（北京）有限公司", "前端开发实习生", "参与百度知道移动端页面开发，负责兼容性测试与埋点统计"),
            job("2011-09", "2012-04", "网易（杭州）网络有限公司", "前端开发实习生", "参与网易云课堂早期版本开发，编写播放器控件与课程详情页"),
            job("2012-05", "2014-05", "腾讯广研", "前端工程师", ""),
            job("2014-06", "2016-03", "阿里巴巴（杭州）网络技术有限公司", "高级前端工程师", "负责淘宝商家后台的前端架构设计与性能优化，主导组件库建设，首屏时间降低百分之四十"),
            job("2016-04", "2018-08", "北京字节跳动科技有限公司", "前端技术专家", "带领八人团队负责广告投放平台，推动微前端改造与自动化测试体系落地"),
            job("2018-09", "2021-12", "美团点评", "前端架构师", "设计跨端渲染框架，支持小程序、H5与原生三端统一开发，服务三十余条业务线"),
            job("2022-01", "至今", "上海某某信息科技有限公司", "技术总监", "负责整体技术规划与招聘，搭建数据中台与持续交付流水线")
        ],
        "jobTitle": "前端工程师",
        "operator": {"name": "李四", "email": "lisi@a.com", "phone": "15828748567"},
        "offerInfo": ""
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: publish_candidates COUNT LINKS HOST[,HOST…] RATE TAG";
    let count: usize = args.first().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!(usage))?;
    let links: usize = args.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!(usage))?;
    let hosts: Vec<&str> = args.get(2).map(|h| h.split(',').collect()).ok_or_else(|| anyhow::anyhow!(usage))?;
    let rate: u64 = args.get(3).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!(usage))?;
    let tag = args.get(4).ok_or_else(|| anyhow::anyhow!(usage))?;
    // Benchmarks link only to loopback: refuse any other file host.
    for host in &hosts {
        let addr: std::net::SocketAddr = host.parse().map_err(|_| anyhow::anyhow!("{host}: expected IP:PORT"))?;
        anyhow::ensure!(addr.ip().is_loopback(), "{host}: loopback addresses only");
    }
    let settings = Settings::load(None)?;
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    let conn = broker::Dialer::new(&settings.amqp_url).connect("moka-ingest bench publisher").await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    ch.confirm_select(Default::default()).await?;
    let mut pending = Vec::new();
    let started = tokio::time::Instant::now();
    for i in 0..count {
        if let Some(at) = (i as u64 * 1_000_000).checked_div(rate) {
            tokio::time::sleep_until(started + Duration::from_micros(at)).await;
        }
        let id = format!("{tag}-{i}");
        let url = |k: usize| format!("http://{}/{tag}/{i}/{k}.pdf", hosts[(i * links + k) % hosts.len()]);
        let mut v = candidate(&id, i);
        if links > 0 {
            v["resumeUrl"] = json!(url(0));
        }
        if links > 1 {
            v["interviewFeedbackUrl"] = json!(url(1));
        }
        if links > 2 {
            v["offerAttachmentUrls"] = json!((2..links).map(url).collect::<Vec<_>>());
        }
        let meta = Meta::new("bench", Utc::now().timestamp(), &id, Utc::now());
        let body = meta.body(v.to_string().as_bytes());
        pending.push(
            ch.basic_publish(&topology.exchange, SUBMISSION_KEY, Default::default(), &body, meta.properties()).await?,
        );
        // Confirms in groups: the broker takes them faster than one by one.
        if pending.len() == 50 {
            for confirm in pending.drain(..) {
                anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
            }
        }
    }
    for confirm in pending {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
    }
    eprintln!("published {count} candidates with {links} links each in {:?}", started.elapsed());
    let _ = conn.close(200, "bye").await;
    Ok(())
}
