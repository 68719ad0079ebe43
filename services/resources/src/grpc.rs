//! The tonic adapter: splits upload streams into a header and chunks,
//! streams downloads, maps errors.

use ferry_auth::{Principal, Requirement, principal};
use ferry_proto::v1::resource_service_server::{ResourceService, ResourceServiceServer};
use ferry_proto::v1::{
    BlobInfo, DownloadArtifactRequest, DownloadArtifactResponse, DownloadSourceRequest,
    DownloadSourceResponse, ListArtifactsRequest, ListArtifactsResponse, UploadArtifactRequest,
    UploadArtifactResponse, UploadSourceRequest, UploadSourceResponse, UploadTestResultsRequest,
    UploadTestResultsResponse, download_artifact_response, download_source_response,
    upload_artifact_request, upload_source_request, upload_test_results_request,
};
use ferry_service::{Error, from_stream};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::blob::BlobReader;
use crate::{MAX_CHUNK, Reader, Resources, stream_blob};

/// What each method needs.
pub const AUTH: &[(&str, Requirement)] = &[
    (
        "/ferry.v1.ResourceService/UploadSource",
        Requirement::Administrator,
    ),
    ("/ferry.v1.ResourceService/DownloadSource", Requirement::Job),
    (
        "/ferry.v1.ResourceService/UploadTestResults",
        Requirement::Job,
    ),
    ("/ferry.v1.ResourceService/UploadArtifact", Requirement::Job),
    (
        "/ferry.v1.ResourceService/DownloadArtifact",
        Requirement::AdministratorOrJob,
    ),
    (
        "/ferry.v1.ResourceService/ListArtifacts",
        Requirement::AdministratorOrJob,
    ),
];

/// Largest message: a chunk with room for framing.
pub const MAX_MESSAGE_SIZE: usize = MAX_CHUNK + 64 * 1024;

/// The tonic service around [`Resources`].
pub fn server(resources: Resources) -> ResourceServiceServer<Resources> {
    ResourceServiceServer::new(resources)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// An upload message: its header (first message) or a chunk.
enum Part {
    Header,
    Chunk(Vec<u8>),
    Empty,
}

/// Splits an upload stream into its first message and the chunks after it.
async fn split<M, F>(
    mut inbound: Streaming<M>,
    part: F,
) -> Result<
    (
        M,
        impl Stream<Item = ferry_service::Result<Vec<u8>>> + Unpin,
    ),
    Status,
>
where
    M: Send + 'static,
    F: Fn(&mut M) -> Part + Copy + Send + 'static,
{
    let first = inbound
        .message()
        .await
        .map_err(from_stream)?
        .ok_or_else(|| Status::invalid_argument("the upload ended before its header"))?;
    let chunks = inbound.filter_map(move |message| async move {
        match message {
            Ok(mut message) => match part(&mut message) {
                Part::Chunk(bytes) => Some(Ok(bytes)),
                Part::Empty => None,
                Part::Header => Some(Err(Error::InvalidArgument(
                    "only the first message carries a header".to_owned(),
                ))),
            },
            Err(status) => {
                let status = from_stream(status);
                Some(Err(if status.code() == tonic::Code::ResourceExhausted {
                    Error::TooLarge(status.message().to_owned())
                } else {
                    Error::InvalidArgument(format!(
                        "the upload stream failed: {}",
                        status.message()
                    ))
                }))
            }
        }
    });
    Ok((first, Box::pin(chunks)))
}

/// Streams `info` then the blob's chunks, built into messages by `wrap`.
fn download<T: Send + 'static>(
    info: BlobInfo,
    reader: BlobReader,
    info_message: fn(BlobInfo) -> T,
    chunk_message: fn(Vec<u8>) -> T,
) -> ReceiverStream<Result<T, Status>> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        if sender.send(Ok(info_message(info))).await.is_err() {
            return;
        }
        let chunk_sender = sender.clone();
        let result = stream_blob(reader, |chunk| {
            let sender = chunk_sender.clone();
            async move { sender.send(Ok(chunk_message(chunk))).await.is_ok() }
        })
        .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error.into())).await;
        }
    });
    ReceiverStream::new(receiver)
}

fn reader<T>(request: &Request<T>) -> Result<Reader<'_>, Status> {
    match principal::of(request)? {
        Principal::Administrator(identity) => Ok(Reader::Administrator(identity)),
        Principal::Job(identity) => Ok(Reader::Job(identity)),
        Principal::Agent(_) => Err(Status::permission_denied(
            "a listener token reads no artifacts",
        )),
    }
}

#[tonic::async_trait]
impl ResourceService for Resources {
    type DownloadSourceStream = ReceiverStream<Result<DownloadSourceResponse, Status>>;
    type DownloadArtifactStream = ReceiverStream<Result<DownloadArtifactResponse, Status>>;

    async fn upload_source(
        &self,
        request: Request<Streaming<UploadSourceRequest>>,
    ) -> Result<Response<UploadSourceResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        let (mut first, chunks) = split(
            request.into_inner(),
            |message: &mut UploadSourceRequest| match message.content.take() {
                Some(upload_source_request::Content::Header(_)) => Part::Header,
                Some(upload_source_request::Content::Chunk(bytes)) => Part::Chunk(bytes),
                None => Part::Empty,
            },
        )
        .await?;
        let header = match first.content.take() {
            Some(upload_source_request::Content::Header(header)) => Some(header),
            _ => None,
        };
        let (source_id, info) = self
            .upload_source(&caller, &first.pool, header, chunks)
            .await?;
        Ok(Response::new(UploadSourceResponse {
            source_id,
            info: Some(info),
        }))
    }

    async fn download_source(
        &self,
        request: Request<DownloadSourceRequest>,
    ) -> Result<Response<Self::DownloadSourceStream>, Status> {
        let caller = principal::job(&request)?;
        let (info, reader) =
            Resources::download_source(self, caller, &request.get_ref().job_id).await?;
        Ok(Response::new(download(
            info,
            reader,
            |info| DownloadSourceResponse {
                content: Some(download_source_response::Content::Info(info)),
            },
            |chunk| DownloadSourceResponse {
                content: Some(download_source_response::Content::Chunk(chunk)),
            },
        )))
    }

    async fn upload_test_results(
        &self,
        request: Request<Streaming<UploadTestResultsRequest>>,
    ) -> Result<Response<UploadTestResultsResponse>, Status> {
        let caller = principal::job(&request)?.clone();
        let (mut first, chunks) = split(
            request.into_inner(),
            |message: &mut UploadTestResultsRequest| match message.content.take() {
                Some(upload_test_results_request::Content::Header(_)) => Part::Header,
                Some(upload_test_results_request::Content::Chunk(bytes)) => Part::Chunk(bytes),
                None => Part::Empty,
            },
        )
        .await?;
        let header = match first.content.take() {
            Some(upload_test_results_request::Content::Header(header)) => Some(header),
            _ => None,
        };
        let summary = self
            .upload_test_results(&caller, &first.job_id, header, chunks)
            .await?;
        Ok(Response::new(UploadTestResultsResponse {
            summary: Some(ferry_service::wire::test_summary(summary)),
        }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<UploadArtifactRequest>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        let caller = principal::job(&request)?.clone();
        let (mut first, chunks) = split(
            request.into_inner(),
            |message: &mut UploadArtifactRequest| match message.content.take() {
                Some(upload_artifact_request::Content::Header(_)) => Part::Header,
                Some(upload_artifact_request::Content::Chunk(bytes)) => Part::Chunk(bytes),
                None => Part::Empty,
            },
        )
        .await?;
        let header = match first.content.take() {
            Some(upload_artifact_request::Content::Header(header)) => Some(header),
            _ => None,
        };
        let info = self
            .upload_artifact(&caller, &first.job_id, header, chunks)
            .await?;
        Ok(Response::new(UploadArtifactResponse { info: Some(info) }))
    }

    async fn download_artifact(
        &self,
        request: Request<DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let caller = reader(&request)?;
        let message = request.get_ref();
        let (info, blob) =
            Resources::download_artifact(self, &caller, &message.job_id, &message.name).await?;
        Ok(Response::new(download(
            info,
            blob,
            |info| DownloadArtifactResponse {
                content: Some(download_artifact_response::Content::Info(info)),
            },
            |chunk| DownloadArtifactResponse {
                content: Some(download_artifact_response::Content::Chunk(chunk)),
            },
        )))
    }

    async fn list_artifacts(
        &self,
        request: Request<ListArtifactsRequest>,
    ) -> Result<Response<ListArtifactsResponse>, Status> {
        let caller = reader(&request)?;
        let (artifacts, state) =
            Resources::list_artifacts(self, &caller, &request.get_ref().job_id).await?;
        Ok(Response::new(ListArtifactsResponse {
            artifacts,
            job_state: ferry_service::wire::job_state(state).into(),
        }))
    }
}
