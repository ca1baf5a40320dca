import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { takeUntilDestroyed } from '@angular/core/rxjs-interop';
import { ActivatedRoute } from '@angular/router';
import { toJson } from '@bufbuild/protobuf';

import { EventSchema, WebhookService, type Event } from '@gen/paymesh/webhook/v1/webhook_pb';
import { TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { describeError } from '@shared/rest';
import { timestampFromDate } from '@shared/time';
import { Catalog } from '../catalog';
import { dayRange } from '../figures';
import { Session } from '../session';

const PAGE_SIZE = 25;

/** The merchant's events, by type and date, each with its JSON as webhooks carry it. */
@Component({
  selector: 'pm-events-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, MatSelectModule, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Events</h1>
    <form class="toolbar-row filters" (ngSubmit)="search()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic" class="wide">
        <mat-label>Event id</mat-label>
        <input matInput name="eventId" [(ngModel)]="eventId" placeholder="evt_…" data-testid="event-id">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Type</mat-label>
        <mat-select name="type" [(ngModel)]="type" data-testid="event-type">
          <mat-option value="">Any</mat-option>
          @for (t of catalog.types(); track t.name) { <mat-option [value]="t.name">{{ t.name }}</mat-option> }
        </mat-select>
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>From</mat-label>
        <input matInput type="date" name="from" [(ngModel)]="from">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>To</mat-label>
        <input matInput type="date" name="to" [(ngModel)]="to">
      </mat-form-field>
      <button mat-flat-button type="submit" data-testid="search">Search</button>
    </form>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Events">
      <table data-testid="events-table">
        <thead><tr><th>Event</th><th>Type</th><th>Object</th><th>Created</th><th><span class="visually-hidden">JSON</span></th></tr></thead>
        <tbody>
          @for (e of events(); track e.id) {
            <tr [attr.data-testid]="'event-' + e.id">
              <td class="mono">{{ e.id }}</td>
              <td>{{ e.type }}</td>
              <td class="mono">{{ objectId(e) }}</td>
              <td>{{ e.createTime | time }}</td>
              <td><button mat-button type="button" (click)="toggle(e.id)" [attr.aria-expanded]="open() === e.id" data-testid="show-json">{{ open() === e.id ? 'Hide JSON' : 'JSON' }}</button></td>
            </tr>
            @if (open() === e.id) {
              <tr class="json-row"><td colspan="5"><pre class="mono json" tabindex="0" [attr.aria-label]="'JSON of ' + e.id" data-testid="event-json">{{ json(e) }}</pre></td></tr>
            }
          }
        </tbody>
      </table>
      @if (!loading() && events().length === 0) { <p class="empty">No events.</p> }
      @if (!single()) {
        <pm-pager [pager]="pager" (moved)="moved()" />
      }
    </div>
  `,
  styles: `
    .filters mat-form-field { width: 180px; } .filters .wide { width: 240px; }
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; vertical-align: top; }
    th { font-weight: 500; color: #545b69; }
    .json { margin: 0; padding: 0.75rem; background: #f4f6fa; border-radius: 6px; max-height: 28rem; overflow: auto; white-space: pre; }
   
  `,
})
export class EventsPage implements OnInit {
  private readonly session = inject(Session);
  eventId = '';
  type = '';
  from = '';
  to = '';
  readonly catalog = inject(Catalog);
  readonly events = signal<Event[]>([]);
  readonly open = signal<string | null>(null);
  /** One event asked by id: no paging. */
  readonly single = signal(false);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  constructor() {
    // `?id=` (a link from a payment or a delivery) shows that event; the same page without it,
    // the list. The router keeps this page when only the query changes, so it listens.
    inject(ActivatedRoute)
      .queryParamMap.pipe(takeUntilDestroyed())
      .subscribe((query) => {
        this.eventId = query.get('id') ?? '';
        this.pager.reset();
        void this.load();
      });
  }

  ngOnInit(): void {
    this.catalog.load().catch((error: unknown) => this.error.set(describeError(error)));
  }

  objectId(event: Event): string {
    const id = (event.data?.['object'] as { id?: unknown } | undefined)?.id;
    return typeof id === 'string' ? id : '';
  }

  /** The event as GET /v1/events/{id} answers it. */
  json(event: Event): string {
    return JSON.stringify(toJson(EventSchema, event, { useProtoFieldName: true }), null, 2);
  }

  toggle(id: string): void {
    this.open.update((current) => (current === id ? null : id));
  }

  search(): void {
    this.pager.reset();
    void this.load();
  }

  moved(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    this.loading.set(true);
    this.error.set('');
    const id = this.eventId.trim();
    try {
      if (id) {
        const event = await this.session.api(WebhookService.method.getEvent, { id });
        this.single.set(true);
        this.events.set([event]);
        this.open.set(event.id);
        return;
      }
      const range = dayRange(this.from, this.to);
      const response = await this.session.api(WebhookService.method.listEvents, {
        type: this.type,
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
        createdGte: range.createdGte && timestampFromDate(range.createdGte),
        createdLt: range.createdLt && timestampFromDate(range.createdLt),
      });
      this.single.set(false);
      this.open.set(null);
      this.events.set(response.events);
      this.pager.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.events.set([]);
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
