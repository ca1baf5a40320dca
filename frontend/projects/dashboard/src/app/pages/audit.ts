import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';

import { AdminService, type AuditEntry } from '@gen/paymesh/admin/v1/admin_pb';
import { TimePipe } from '@shared/format';
import { Session, describeError } from '../session';

const PAGE_SIZE = 50;

/** What operators did: who, what, to which object, from where. */
@Component({
  selector: 'pm-audit-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, TimePipe],
  template: `
    <h1 class="page-title">Audit log</h1>
    <form class="toolbar-row" (ngSubmit)="load()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Action</mat-label>
        <input matInput name="action" [(ngModel)]="action" placeholder="e.g. api_key.revoke">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Target id</mat-label>
        <input matInput name="target" [(ngModel)]="targetId">
      </mat-form-field>
      <button mat-flat-button type="submit">Filter</button>
    </form>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Audit log">
      <table data-testid="audit-table">
        <thead><tr><th>When</th><th>Operator</th><th>Action</th><th>Target</th><th>Details</th><th>From</th></tr></thead>
        <tbody>
          @for (e of entries(); track e.id) {
            <tr>
              <td>{{ e.createTime | time }}</td>
              <td>{{ e.operatorEmail || e.operatorId }}</td>
              <td><strong>{{ e.action }}</strong></td>
              <td class="mono">{{ e.targetId }}</td>
              <td class="mono">{{ details(e) }}</td>
              <td class="muted">{{ e.clientIp }}</td>
            </tr>
          } @empty { <tr><td colspan="6" class="muted">No entries.</td></tr> }
        </tbody>
      </table>
      @if (nextToken()) { <button mat-button (click)="load(nextToken())">Load more</button> }
    </div>
  `,
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.45rem 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; }
    th { font-weight: 500; color: #545b69; }
  `,
})
export class AuditPage implements OnInit {
  private readonly session = inject(Session);
  readonly entries = signal<AuditEntry[]>([]);
  readonly nextToken = signal('');
  readonly error = signal('');
  action = '';
  targetId = '';

  ngOnInit(): void {
    void this.load();
  }

  async load(pageToken = ''): Promise<void> {
    try {
      const response = await this.session.api(AdminService.method.listAuditLog, {
        action: this.action.trim(),
        targetId: this.targetId.trim(),
        pageSize: PAGE_SIZE,
        pageToken,
      });
      this.entries.update((current) => (pageToken ? [...current, ...response.entries] : response.entries));
      this.nextToken.set(response.nextPageToken);
      this.error.set('');
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  details(entry: AuditEntry): string {
    return Object.entries(entry.details).map(([k, v]) => `${k}=${v}`).join(' ');
  }
}
